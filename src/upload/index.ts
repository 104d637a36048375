export { Uploader, type UploaderStatus } from './uploader.js';
export { retryDelayMs, defaultBackoff, type BackoffPolicy } from './backoff.js';
