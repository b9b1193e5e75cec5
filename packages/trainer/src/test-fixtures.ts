import { fileURLToPath } from 'node:url';

/** The trainer's golden fixture (scripts/reference/make_trainer_fixtures.py) and the vision tower it uses. */
export const FIXTURE = fileURLToPath(new URL('../fixtures/tiny-vlm/', import.meta.url));
export const VISION = fileURLToPath(new URL('../../vision/fixtures/clip-tiny/', import.meta.url));
