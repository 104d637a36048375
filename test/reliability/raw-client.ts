/**
 * A byte-exact HTTP/1.1 client over a plain socket, for requests fetch cannot express (bad
 * framing, stalls, odd request lines). Unlike test/helpers/raw-http.ts it understands every way
 * a response can end (Content-Length, chunked, HEAD, until close), keeps the body as bytes, and
 * reports when and by whom the connection was closed.
 */
import net from 'node:net';

export interface ParsedResponse {
  status: number;
  headers: Record<string, string>;
  body: Buffer;
}

export interface Exchange {
  /** The first final (non-1xx) response, when a complete one arrived. */
  response?: ParsedResponse;
  /** server: the daemon closed the connection; client: we did, after a complete response; timeout: neither in time. */
  closedBy: 'server' | 'client' | 'timeout';
  /** From the first byte written to the end of the exchange. */
  elapsedMs: number;
  /** Every byte the server sent. */
  received: Buffer;
  /** The socket error, if any (EPIPE/ECONNRESET: the server closed while we were still sending). */
  socketError?: string;
}

export interface ExchangeOptions {
  /** HEAD responses carry no body whatever their Content-Length says. */
  method?: string;
  /** After writing: keep the socket open (default), half-close it, or destroy it. */
  then?: 'wait' | 'end' | 'destroy';
  /** Give up (and count it as a hang) after this long. */
  timeoutMs?: number;
  /** Keep the socket open after a complete response until the server closes it (or the timeout). */
  waitForClose?: boolean;
}

type ParseResult = { done: true; response: ParsedResponse } | { done: false };

/** Parses the first final response out of `data`; `closed` means no more bytes will come. */
export function parseResponse(data: Buffer, method: string | undefined, closed: boolean): ParseResult {
  let offset = 0;
  for (;;) {
    const headerEnd = data.indexOf('\r\n\r\n', offset, 'latin1');
    if (headerEnd < 0) return { done: false };
    const [statusLine, ...lines] = data.subarray(offset, headerEnd).toString('latin1').split('\r\n');
    const status = Number(statusLine!.split(' ')[1]);
    const headers: Record<string, string> = {};
    for (const line of lines) {
      const colon = line.indexOf(':');
      if (colon > 0) headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
    }
    const bodyStart = headerEnd + 4;
    if (status >= 100 && status < 200) {
      offset = bodyStart; // 100 Continue and friends: the final answer follows
      continue;
    }
    if (method === 'HEAD' || status === 204 || status === 304) return { done: true, response: { status, headers, body: Buffer.alloc(0) } };
    if (/chunked/i.test(headers['transfer-encoding'] ?? '')) {
      const chunks: Buffer[] = [];
      let at = bodyStart;
      for (;;) {
        const lineEnd = data.indexOf('\r\n', at, 'latin1');
        if (lineEnd < 0) return { done: false };
        const size = Number.parseInt(data.subarray(at, lineEnd).toString('latin1'), 16);
        if (Number.isNaN(size)) return closed ? { done: true, response: { status, headers, body: Buffer.concat(chunks) } } : { done: false };
        if (size === 0) {
          // Last chunk: no trailers from this server, so a bare CRLF ends the body.
          if (data.length < lineEnd + 4) return { done: false };
          return { done: true, response: { status, headers, body: Buffer.concat(chunks) } };
        }
        if (data.length < lineEnd + 2 + size + 2) return { done: false };
        chunks.push(data.subarray(lineEnd + 2, lineEnd + 2 + size));
        at = lineEnd + 2 + size + 2;
      }
    }
    if (headers['content-length'] !== undefined) {
      const length = Number(headers['content-length']);
      if (data.length - bodyStart < length) return { done: false };
      return { done: true, response: { status, headers, body: data.subarray(bodyStart, bodyStart + length) } };
    }
    // No framing: the body runs until the server closes.
    return closed ? { done: true, response: { status, headers, body: data.subarray(bodyStart) } } : { done: false };
  }
}

/**
 * Writes `parts` in order (a number between parts is a pause in ms), then does `then`; resolves
 * with the first complete response and how the connection ended.
 */
export function exchange(port: number, parts: (Buffer | string | number)[], options: ExchangeOptions = {}): Promise<Exchange> {
  return new Promise((resolve) => {
    const started = performance.now();
    const socket = net.connect(port, '127.0.0.1');
    let data = Buffer.alloc(0);
    let response: ParsedResponse | undefined;
    let settled = false;
    let socketError: string | undefined;
    const finish = (closedBy: Exchange['closedBy']) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      resolve({ response, closedBy, elapsedMs: performance.now() - started, received: data, socketError });
    };
    const timer = setTimeout(() => finish('timeout'), options.timeoutMs ?? 10_000);
    socket.on('data', (chunk: Buffer) => {
      data = Buffer.concat([data, chunk]);
      if (response) return;
      const parsed = parseResponse(data, options.method, false);
      if (parsed.done) {
        response = parsed.response;
        if (!options.waitForClose) finish('client');
      }
    });
    socket.on('error', (error: NodeJS.ErrnoException) => {
      socketError ??= error.code ?? error.message;
    });
    socket.on('close', () => {
      if (!response) {
        const parsed = parseResponse(data, options.method, true);
        if (parsed.done) response = parsed.response;
      }
      finish('server');
    });
    socket.once('connect', async () => {
      for (const part of parts) {
        if (settled || socket.destroyed) return;
        if (typeof part === 'number') await new Promise((r) => setTimeout(r, part));
        else socket.write(part);
      }
      if (settled) return;
      if (options.then === 'end') socket.end();
      else if (options.then === 'destroy') finish('client');
    });
  });
}

/** A request head: the request line and header lines joined with CRLF, ending in the blank line. */
export function head(requestLine: string, headers: (string | undefined)[]): string {
  return [requestLine, ...headers.filter((h): h is string => h !== undefined), '', ''].join('\r\n');
}
