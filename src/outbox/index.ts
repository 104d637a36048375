export { Outbox, type OutboxRow, type OutboxState, type OutboxSummary, type DueUpload } from './outbox.js';
export { Announcements, type Announcement, type PendingAnnouncement } from './announcements.js';
