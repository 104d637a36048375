/** The S3 backend of the remote tier: client, object layout and format, signatures, @nx/s3-cache's objects. */
export { S3RemoteStore, S3OperationError, type S3RemoteStoreOptions, type FetchedObject } from './remote-store.js';
export { createS3Client, type ConfiguredS3Client } from './s3-client.js';
export { classifyS3Error, type S3Failure } from './s3-errors.js';
export { objectKey, zonePrefix, doctorProbeKey, indexObjectPrefix, OBJECT_NAMESPACE, NO_ZONE } from './object-key.js';
export { ObjectCodec, type ObjectFormatName } from './object-format.js';
export { deriveMasterKey } from './encryption-key.js';
export { pluginCipherKey, pluginObjectKey, pluginObjectPrefix } from './plugin-format.js';
export { remoteStoreFor, indexObjectsFor } from './remote-store-for.js';
export { S3IndexObjects, DELETE_OBJECTS_MAX_KEYS } from './index-objects.js';
export { artifactHashOf, listPrefix, type ListedObject, type PrefixListing } from './zone-listing.js';
