export { createServer, type VqaServer, type ListeningServer, type CloseOptions } from './app.js';
export { runServer, serveUntilSignal, type RunOptions, type RunningServer, type ServeUntilSignalOptions } from './run.js';
export { DEFAULT_MODEL_MODULE, type ServerOptions } from './options.js';
export type { ModelModule } from './protocol.js';
export { ApiError, type ErrorBody } from './errors.js';
