export { Outbox, type OutboxRow, type OutboxState, type OutboxSummary, type DueUpload } from './outbox.js';
export { MultipartProgress, type AbandonedMultipartUpload } from './multipart-progress.js';
export { Announcements, type Announcement, type PendingAnnouncement } from './announcements.js';
