/** Where the daemon is reached: loopback hosts and addresses, and the URL clients use. */

/** A host name or address that only this machine reaches: localhost, 127.0.0.0/8, ::1. */
export function isLoopbackHost(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host);
}

/** A peer address from this machine: 127.0.0.0/8 and ::1, also as IPv4-mapped IPv6 addresses. */
export function isLoopbackAddress(address: string | undefined): boolean {
  if (!address || address === 'localhost') return false;
  return isLoopbackHost(address.startsWith('::ffff:') ? address.slice('::ffff:'.length) : address);
}

/** The address clients should use: a wildcard listen is reached through loopback. */
export function urlHost(host: string): string {
  if (host === '0.0.0.0') return '127.0.0.1';
  if (host === '::') return '[::1]';
  return host.includes(':') ? `[${host}]` : host;
}

/** The base URL of the daemon listening on host and port, as nx and the commands reach it. */
export function daemonUrl(host: string, port: number): string {
  return `http://${urlHost(host)}:${port}`;
}
