/**
 * Trust zones (README: Securing your cache). A daemon writes into one zone (or none) and reads
 * an ordered list of zones; each zone is a key prefix in the bucket (remote/object-key.ts) and a
 * label on the local tier's artifacts, so a low-trust build never puts an artifact where a
 * higher-trust zone reads it, in S3 or on disk.
 */
import { ConfigError } from './errors.js';

export interface ZoneConfig {
  /** The zone uploads go to; null: never upload (write zone "none"). */
  write: string | null;
  /** Where read-through looks, in order; the first object found (and verified) wins. */
  read: string[];
}

/** Lower-case letters, digits, ".", "_", "-", in segments joined by single "/"; no "." or ".." segment. */
const ZONE_SEGMENT = /^[a-z0-9._-]+$/;
export const NO_WRITE_ZONE = 'none';

export function isValidZoneName(zone: string): boolean {
  if (zone.length === 0 || zone.length > 128 || zone === NO_WRITE_ZONE) return false;
  return zone.split('/').every((segment) => ZONE_SEGMENT.test(segment) && segment !== '.' && segment !== '..');
}

const zoneRule = 'a zone name is lower-case letters, digits, ".", "_" and "-", in segments joined by single "/" (like trusted, pr/123, dev/alice), at most 128 characters';

/**
 * The zones from --write-zone and --read-zones, or undefined when neither is set (the zone-less
 * layout, as before zones existed). With only a write zone, the daemon reads that zone; with only
 * read zones, it writes none.
 */
export function resolveZones(writeText: string | undefined, readText: string | undefined, where: (key: 'write-zone' | 'read-zones') => string): ZoneConfig | undefined {
  if (writeText === undefined && readText === undefined) return undefined;
  let write: string | null = null;
  if (writeText !== undefined && writeText !== NO_WRITE_ZONE) {
    if (!isValidZoneName(writeText)) throw new ConfigError(where('write-zone'), `"${writeText}" is not a zone: ${zoneRule}; or "none" to never upload`);
    write = writeText;
  }
  let read: string[];
  if (readText === undefined) read = write === null ? [] : [write];
  else {
    read = readText.split(',').map((zone) => zone.trim());
    for (const zone of read) {
      if (!isValidZoneName(zone)) throw new ConfigError(where('read-zones'), `"${zone}" is not a zone: ${zoneRule}; separate zones with ","`);
    }
    const repeated = read.find((zone, i) => read.indexOf(zone) !== i);
    if (repeated !== undefined) throw new ConfigError(where('read-zones'), `"${repeated}" is listed twice`);
  }
  return { write, read };
}

/** The local tier's label for artifacts read through from the zone-less layout, or stored without zones. */
export const NO_ZONE = '';

/** The zone as log lines and reports show it ('' is the zone-less layout). */
export function zoneLabel(zone: string): string {
  return zone === NO_ZONE ? '(no zone)' : zone;
}
/** The local tier's label for artifacts Nx stored on a daemon that writes no zone: never uploaded, served only here. */
export const LOCAL_ONLY_ZONE = '(local)';

/** The zone label a PUT's artifact gets in the local tier. */
export function localPutZone(zones: ZoneConfig | undefined): string {
  if (!zones) return NO_ZONE;
  return zones.write ?? LOCAL_ONLY_ZONE;
}

/** The zone labels of local artifacts this daemon may serve: its read zones and what its PUTs get. */
export function servedZones(zones: ZoneConfig | undefined): ReadonlySet<string> {
  return new Set(zones ? [...zones.read, localPutZone(zones)] : [NO_ZONE]);
}
