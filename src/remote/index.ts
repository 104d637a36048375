export { RemoteStore, S3OperationError, UploadVerificationError, ReadDeadlineError, type UploadOutcome, type FetchedObject, type FetchedArtifact, type UploadSource } from './remote-store.js';
export { createS3Client, type ConfiguredS3Client } from './s3-client.js';
export { classifyS3Error, type S3Failure } from './s3-errors.js';
export { objectKey, OBJECT_NAMESPACE } from './object-key.js';
export { ObjectCodec, type ObjectFormatName } from './object-format.js';
export { deriveMasterKey } from './encryption-key.js';
export { pluginCipherKey, pluginObjectKey } from './plugin-format.js';
export { BadObjectError } from './bad-object.js';
export { remoteStoreFor } from './remote-store-for.js';
