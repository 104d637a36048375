/** How each of doctor's checks reports: one line with its outcome, what it checked, and the detail or fix. */
export type DoctorOutcome = 'ok' | 'warn' | 'fail';
export type DoctorReport = (outcome: DoctorOutcome, what: string, detail: string) => void;
