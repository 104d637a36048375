/**
 * Sends hand-made HTTP/1.1 requests over a plain socket, for what fetch refuses to send:
 * bodies shorter or longer than their Content-Length, clients that vanish mid-body.
 */
import net from 'node:net';

export interface RawResponse {
  status: number;
  headers: Record<string, string>;
  body: string;
}

export function parseRawResponse(text: string): RawResponse | undefined {
  const headerEnd = text.indexOf('\r\n\r\n');
  if (headerEnd < 0) return undefined;
  const [statusLine, ...headerLines] = text.slice(0, headerEnd).split('\r\n');
  const headers: Record<string, string> = {};
  for (const line of headerLines) {
    const colon = line.indexOf(':');
    headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
  }
  return { status: Number(statusLine!.split(' ')[1]), headers, body: text.slice(headerEnd + 4) };
}

/**
 * Writes `head` (header lines separated by \n, no blank line) and `body`, then keeps the socket
 * open (`wait`, the default), half-closes it (`end`) or destroys it; resolves with the first
 * complete answer, or when the socket closes or the timeout passes.
 */
export function rawRequest(
  port: number,
  head: string,
  body: Buffer = Buffer.alloc(0),
  options: { then?: 'end' | 'destroy' | 'wait'; timeoutMs?: number } = {},
): Promise<{ response?: RawResponse; closedBy: 'server' | 'client' | 'timeout' }> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    let received = '';
    const timer = setTimeout(() => {
      socket.destroy();
      resolve({ response: parseRawResponse(received), closedBy: 'timeout' });
    }, options.timeoutMs ?? 5000);
    socket.on('data', (d) => {
      received += d.toString('latin1');
      const response = parseRawResponse(received);
      if (response && Buffer.byteLength(response.body, 'latin1') >= Number(response.headers['content-length'] ?? Infinity)) {
        clearTimeout(timer);
        socket.destroy();
        resolve({ response, closedBy: 'client' });
      }
    });
    socket.on('error', () => {});
    socket.on('close', () => {
      clearTimeout(timer);
      resolve({ response: parseRawResponse(received), closedBy: options.then === 'destroy' ? 'client' : 'server' });
    });
    socket.write(head.replace(/\n/g, '\r\n') + '\r\n');
    socket.write(body);
    if (options.then === 'destroy') socket.destroy();
    else if (options.then === 'end') socket.end();
  });
}
