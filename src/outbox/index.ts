export { Outbox, type OutboxRow, type OutboxState, type OutboxSummary, type DueUpload } from './outbox.js';
