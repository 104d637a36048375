export { RemoteStore, S3OperationError, UploadVerificationError, ReadDeadlineError, type UploadOutcome, type FetchedObject, type UploadSource } from './remote-store.js';
export { createS3Client, type ConfiguredS3Client } from './s3-client.js';
export { classifyS3Error, type S3Failure } from './s3-errors.js';
export { objectKey, OBJECT_NAMESPACE } from './object-key.js';
