export { Uploader, type UploaderStatus, type UploaderCounters, type BlobReader, type BlobToUpload } from './uploader.js';
export { retryDelayMs, defaultBackoff, type BackoffPolicy } from './backoff.js';
export { type UploadIndex } from './upload-index.js';
