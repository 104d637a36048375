/**
 * Multipart uploads under way, kept in the index beside the outbox (tables multipart_progress and
 * multipart_parts, schema in store/index-db.ts): the journal a resumable upload writes, and the
 * uploads whose outbox row is gone, which the uploader aborts.
 */
import type Database from 'better-sqlite3';
import type { MultipartJournal, SavedMultipartUpload, UploadedPart } from '../remote/index.js';

interface ProgressRow {
  hash: string;
  upload_id: string;
  object_key: string;
  object_sha256: string;
  object_header: Buffer;
  part_size_bytes: number;
  create_digest: string;
}

interface PartRow {
  part_number: number;
  etag: string;
  size_bytes: number;
  checksum_crc32: string | null;
}

/** A multipart upload whose artifact is no longer to be uploaded. */
export interface AbandonedMultipartUpload {
  hash: string;
  key: string;
  uploadId: string;
}

export class MultipartProgress {
  private readonly statements;

  constructor(private readonly db: Database.Database) {
    this.statements = {
      get: db.prepare<[string], ProgressRow>('SELECT * FROM multipart_progress WHERE hash = ?'),
      parts: db.prepare<[string], PartRow>('SELECT part_number, etag, size_bytes, checksum_crc32 FROM multipart_parts WHERE hash = ? ORDER BY part_number'),
      start: db.prepare(
        `INSERT OR REPLACE INTO multipart_progress (hash, upload_id, object_key, object_sha256, object_header, part_size_bytes, create_digest, started_ms)
         VALUES (@hash, @upload_id, @object_key, @object_sha256, @object_header, @part_size_bytes, @create_digest, @started_ms)`,
      ),
      addPart: db.prepare(
        'INSERT OR REPLACE INTO multipart_parts (hash, part_number, etag, size_bytes, checksum_crc32) VALUES (@hash, @part_number, @etag, @size_bytes, @checksum_crc32)',
      ),
      removeUpload: db.prepare<[string]>('DELETE FROM multipart_progress WHERE hash = ?'),
      removeParts: db.prepare<[string]>('DELETE FROM multipart_parts WHERE hash = ?'),
      // The outbox table is read, never written, here: its statements live with the outbox.
      abandoned: db.prepare<[], ProgressRow>('SELECT * FROM multipart_progress p WHERE NOT EXISTS (SELECT 1 FROM outbox o WHERE o.hash = p.hash)'),
    };
  }

  /** The journal of `hash`'s multipart upload. */
  journalFor(hash: string): MultipartJournal {
    return {
      load: () => this.load(hash),
      started: (upload) => this.start(hash, upload),
      partUploaded: (part) => this.addPart(hash, part),
      forget: () => this.forget(hash),
    };
  }

  /** Uploads whose outbox row is gone (uploaded otherwise, evicted as damaged, refused): to abort. */
  abandoned(): AbandonedMultipartUpload[] {
    return this.statements.abandoned.all().map((row) => ({ hash: row.hash, key: row.object_key, uploadId: row.upload_id }));
  }

  forget(hash: string): void {
    this.db.transaction(() => {
      this.statements.removeParts.run(hash);
      this.statements.removeUpload.run(hash);
    })();
  }

  private load(hash: string): SavedMultipartUpload | undefined {
    const row = this.statements.get.get(hash);
    if (!row) return undefined;
    const parts: UploadedPart[] = this.statements.parts.all(hash).map((part) => ({
      partNumber: part.part_number,
      etag: part.etag,
      sizeBytes: part.size_bytes,
      ...(part.checksum_crc32 !== null && { checksumCrc32: part.checksum_crc32 }),
    }));
    return {
      uploadId: row.upload_id,
      key: row.object_key,
      objectSha256: row.object_sha256,
      objectHeader: Buffer.from(row.object_header),
      partSizeBytes: row.part_size_bytes,
      createDigest: row.create_digest,
      parts,
    };
  }

  private start(hash: string, upload: Omit<SavedMultipartUpload, 'parts'>): void {
    this.db.transaction(() => {
      this.statements.removeParts.run(hash);
      this.statements.start.run({
        hash,
        upload_id: upload.uploadId,
        object_key: upload.key,
        object_sha256: upload.objectSha256,
        object_header: upload.objectHeader,
        part_size_bytes: upload.partSizeBytes,
        create_digest: upload.createDigest,
        started_ms: Date.now(),
      });
    })();
  }

  private addPart(hash: string, part: UploadedPart): void {
    this.statements.addPart.run({ hash, part_number: part.partNumber, etag: part.etag, size_bytes: part.sizeBytes, checksum_crc32: part.checksumCrc32 ?? null });
  }
}
