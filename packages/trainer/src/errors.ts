/**
 * A problem with the training data (a malformed entry, a missing image, a conversation whose
 * tokenization does not line up): the user can fix it, so the CLI prints one line and exits 2.
 */
export class DataError extends Error {
  constructor(message: string) {
    super(message.split('\n')[0]);
    this.name = 'DataError';
  }
}

/** A bad training setting (an unknown stage, a negative learning rate, …). */
export class TrainConfigError extends Error {
  constructor(message: string) {
    super(message.split('\n')[0]);
    this.name = 'ConfigError';
  }
}
