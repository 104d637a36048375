export { Uploader, type UploaderStatus, type UploaderCounters } from './uploader.js';
export { retryDelayMs, defaultBackoff, type BackoffPolicy } from './backoff.js';
export { MultipartProgress } from './multipart-progress.js';
