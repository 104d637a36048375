/**
 * A small fault-injecting HTTP proxy on 127.0.0.1 in front of an S3 server, for outage and latency
 * tests and benchmarks. Requests are forwarded unchanged (same method, path, Host and signed headers, so
 * SigV4 stays valid for servers that check it); the current mode decides what happens to each request:
 *
 * - pass:      forward.
 * - delay:     wait `ms` before forwarding each request (so every request takes at least `ms` longer).
 * - bandwidth: forward, pacing request and response bodies to `bytesPerSecond` per direction, shared by
 *              all connections (a link cap, not a per-connection one).
 * - stall:     accept and read the request, never answer (no `100 Continue` either).
 * - hang:      like stall, but leaving it keeps the hung connections: their requests stay unanswered,
 *              as after a network path that dropped packets for a while (the client must give up).
 * - flaky:     answer a seeded random share (`failRatio`) of requests 500 or 503 (half each), forward the rest.
 * - script:    `decide` picks, per request, whether to forward it, answer 500/503, 403 AccessDenied (a policy
 *              that denies the key) or 412 PreconditionFailed, forward it with one byte of its body flipped
 *              ('corrupt': damage in flight that the client's checksums must catch), or forward it and alter
 *              the answer: without its x-amz-meta-* headers ('strip-metadata': a store or proxy that drops
 *              user metadata) or with its ETag made weak ('weak-etag': W/"…", as some proxies send).
 * - reset:     destroy the connection with a TCP RST when a request head arrives.
 * - status:    answer 500 InternalError / 503 SlowDown as S3-style XML with `Connection: close`.
 * - refuse:    close the listening socket (connection refused); leaving it re-listens on the same port.
 *
 * Switching to or from a fault mode (anything but pass/delay/bandwidth) destroys every open client
 * connection, so neither a keep-alive connection nor a request already in flight outlives the switch.
 * Between pass/delay/bandwidth, connections are kept: new requests get the new delay, running bodies
 * pick up the new pace at their next chunk. Upstream connection failures become a RST to the client (a
 * network failure, not an S3 answer). Nothing listens beyond 127.0.0.1; every timer is cleared by
 * stop().
 */
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { pipeline, Transform, type TransformCallback } from 'node:stream';
import { reservedPort } from './ports.js';

export type FaultMode =
  | { kind: 'pass' }
  | { kind: 'delay'; ms: number }
  | { kind: 'bandwidth'; bytesPerSecond: number }
  | { kind: 'stall' }
  | { kind: 'reset' }
  | { kind: 'status'; status: 500 | 503 }
  | { kind: 'hang' }
  | { kind: 'flaky'; failRatio: number; seed: number }
  | { kind: 'script'; decide: (request: { method: string; url: string }) => ScriptDecision }
  | { kind: 'refuse' };

/** 'hang': this request is never answered (as in mode 'hang'); `{ delayMs }`: it is passed on that much later. */
export type ScriptDecision = 'pass' | 'hang' | { delayMs: number } | 'corrupt' | 'strip-metadata' | 'weak-etag' | ErrorStatus;
type ErrorStatus = 400 | 403 | 412 | 500 | 503;

/** One request the proxy saw, and what it was answered (undefined: no answer, or not yet). */
export interface ProxiedRequest {
  method: string;
  url: string;
  status?: number;
}

export interface FaultProxy {
  /** http://127.0.0.1:PORT */
  endpoint: string;
  port: number;
  setMode(mode: FaultMode): void;
  mode(): FaultMode;
  /** HTTP request heads seen since start (in every mode; none while refusing). */
  requestCount(): number;
  /** Every request seen since start, in order, with the status it was answered. */
  requests(): readonly ProxiedRequest[];
  /**
   * Resolves once the last setMode() has fully taken effect: the listening socket closed for 'refuse'
   * (listening again after it), and the connections dropped by the switch closed. setMode() itself is
   * synchronous. Await this before asserting on the next request: a client that reuses a pooled
   * keep-alive connection before noticing the proxy closed it sees ECONNRESET, whatever the new mode.
   */
  settled(): Promise<void>;
  stop(): Promise<void>;
}

const FORWARDING = new Set<FaultMode['kind']>(['pass', 'delay', 'bandwidth', 'flaky', 'script']);
/** Upper bound for waiting on a request body before answering in 'status' mode. */
const STATUS_DRAIN_MAX_MS = 5_000;
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'proxy-authenticate', 'proxy-authorization', 'te', 'trailer', 'upgrade']);

function validate(mode: FaultMode): FaultMode {
  switch (mode.kind) {
    case 'delay':
      if (!(mode.ms >= 0) || !Number.isFinite(mode.ms)) throw new Error(`delay: bad ms ${mode.ms}`);
      break;
    case 'bandwidth':
      if (!(mode.bytesPerSecond > 0) || !Number.isFinite(mode.bytesPerSecond)) throw new Error(`bandwidth: bad bytesPerSecond ${mode.bytesPerSecond}`);
      break;
    case 'status':
      if (mode.status !== 500 && mode.status !== 503) throw new Error(`status: bad status ${String(mode.status)}`);
      break;
    case 'flaky':
      if (!(mode.failRatio >= 0 && mode.failRatio <= 1) || !Number.isInteger(mode.seed)) throw new Error(`flaky: bad failRatio ${mode.failRatio} or seed ${mode.seed}`);
      break;
    case 'script':
      if (typeof mode.decide !== 'function') throw new Error('script: decide must be a function');
      break;
    case 'pass':
    case 'stall':
    case 'hang':
    case 'reset':
    case 'refuse':
      break;
    default:
      throw new Error(`unknown fault mode ${JSON.stringify(mode)}`);
  }
  return { ...mode };
}

const ERROR_ANSWERS: Record<ErrorStatus, [code: string, message: string]> = {
  // What a store that checks Content-MD5 answers a body damaged on the way (AWS, Ceph).
  400: ['BadDigest', 'The Content-MD5 you specified did not match what was received.'],
  403: ['AccessDenied', 'Access Denied'],
  412: ['PreconditionFailed', 'At least one of the pre-conditions you specified did not hold'],
  500: ['InternalError', 'We encountered an internal error. Please try again.'],
  503: ['SlowDown', 'Please reduce your request rate.'],
};

function s3ErrorBody(status: ErrorStatus, resource: string): { body: string; requestId: string } {
  const requestId = randomBytes(8).toString('hex').toUpperCase();
  const [code, message] = ERROR_ANSWERS[status];
  const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
  return {
    requestId,
    body:
      `<?xml version="1.0" encoding="UTF-8"?>\n` +
      `<Error><Code>${code}</Code><Message>${message}</Message><Resource>${esc(resource)}</Resource><RequestId>${requestId}</RequestId></Error>`,
  };
}

/** Passes a body through with its first byte inverted (same length: only a checksum can tell). */
function flipFirstByte(): Transform {
  let flipped = false;
  return new Transform({
    transform(chunk: Buffer, _encoding, callback: TransformCallback) {
      if (flipped || chunk.length === 0) return callback(null, chunk);
      flipped = true;
      const copy = Buffer.from(chunk);
      copy[0] = copy[0]! ^ 0xff;
      callback(null, copy);
    },
  });
}

/** mulberry32: a small seeded PRNG, so a flaky run is reproducible from its seed. */
function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Paces bytes through a shared link budget; passes through untouched unless the mode is 'bandwidth'. */
class Pacer {
  private nextFree = 0;
  /** Reserves `bytes` on the link; returns how long to wait (ms) before they may be sent. */
  reserve(bytes: number, bytesPerSecond: number): number {
    const now = performance.now();
    const start = Math.max(now, this.nextFree);
    this.nextFree = start + (bytes * 1000) / bytesPerSecond;
    return this.nextFree - now;
  }
}

class Throttle extends Transform {
  private timer: NodeJS.Timeout | undefined;
  constructor(
    private readonly pacer: Pacer,
    private readonly currentMode: () => FaultMode,
  ) {
    super();
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    const step = (offset: number): void => {
      if (this.destroyed) return done();
      const mode = this.currentMode();
      if (mode.kind !== 'bandwidth') {
        this.push(offset === 0 ? chunk : chunk.subarray(offset));
        return done();
      }
      if (offset >= chunk.length) return done();
      // ~20 slices a second keeps the pace smooth without a timer per byte.
      const slice = Math.max(1024, Math.floor(mode.bytesPerSecond / 20));
      const part = chunk.subarray(offset, offset + slice);
      const wait = this.pacer.reserve(part.length, mode.bytesPerSecond);
      const send = () => {
        this.timer = undefined;
        if (this.destroyed) return done();
        this.push(part);
        step(offset + part.length);
      };
      if (wait < 1) send();
      else this.timer = setTimeout(send, wait);
    };
    step(0);
  }
  override _destroy(err: Error | null, cb: (error: Error | null) => void): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    cb(err);
  }
}

export function startFaultProxy(target: { host: string; port: number }, initial: FaultMode = { kind: 'pass' }): Promise<FaultProxy> {
  let current = validate(initial);
  let count = 0;
  const seen: ProxiedRequest[] = [];
  let random = seededRandom(0);
  let stopped = false;
  let listening = false;
  let port = 0;
  /** Serialises listen/close so 'refuse' ↔ other switches settle in order. */
  let transition: Promise<void> = Promise.resolve();
  const sockets = new Set<Socket>();
  const timers = new Set<NodeJS.Timeout>();
  const upPacer = new Pacer();
  const downPacer = new Pacer();
  const agent = new http.Agent({ keepAlive: true, maxFreeSockets: 16, timeout: 2_000 });

  const later = (ms: number, fn: () => void): NodeJS.Timeout => {
    const t = setTimeout(() => {
      timers.delete(t);
      fn();
    }, ms);
    timers.add(t);
    return t;
  };
  const cancel = (t: NodeJS.Timeout | undefined) => {
    if (t) {
      clearTimeout(t);
      timers.delete(t);
    }
  };

  /** Sleeps for the listen retry loop; stop() cuts them short. */
  const backoffs = new Map<NodeJS.Timeout, () => void>();
  const backoff = (ms: number) =>
    new Promise<void>((resolve) => {
      const t = setTimeout(() => {
        backoffs.delete(t);
        resolve();
      }, ms);
      backoffs.set(t, resolve);
    });

  const resetSocket = (socket: Socket) => {
    if (socket.destroyed) return;
    try {
      socket.resetAndDestroy();
    } catch {
      socket.destroy();
    }
  };
  /** Destroys every client connection; resolves when they are closed and the loop has turned (≤ 1 s). */
  const dropAllConnections = (): Promise<void> => {
    const closing = [...sockets].map((socket) => new Promise<void>((resolve) => (socket.closed ? resolve() : socket.once('close', () => resolve()))));
    for (const socket of sockets) socket.destroy();
    sockets.clear();
    for (const t of timers) clearTimeout(t);
    timers.clear();
    if (closing.length === 0) return Promise.resolve();
    // The extra moment lets an in-process client see the FIN before it reuses a pooled connection.
    return Promise.race([Promise.all(closing).then(() => backoff(20)), backoff(1_000)]);
  };

  function answerStatus(req: http.IncomingMessage, res: http.ServerResponse, status: ErrorStatus, expectsContinue: boolean, record: ProxiedRequest) {
    const { body, requestId } = s3ErrorBody(status, (req.url ?? '/').split('?')[0]!);
    const send = () => {
      if (res.headersSent || res.destroyed) return;
      record.status = status;
      res.shouldKeepAlive = false;
      res.writeHead(status, {
        'Content-Type': 'application/xml',
        'Content-Length': Buffer.byteLength(body),
        'Connection': 'close',
        'x-amz-request-id': requestId,
        ...(status === 503 ? { 'Retry-After': '1' } : {}),
      });
      res.end(req.method === 'HEAD' ? undefined : body);
    };
    if (expectsContinue) return send(); // no 100 Continue: the client never sends the body
    // Read the body first, so closing the connection does not turn into a RST over unread bytes.
    const t = later(STATUS_DRAIN_MAX_MS, send);
    req.on('end', () => {
      cancel(t);
      send();
    });
    req.on('close', () => cancel(t));
    req.resume();
  }

  type Alteration = 'corrupt' | 'strip-metadata' | 'weak-etag' | undefined;
  function forward(req: http.IncomingMessage, res: http.ServerResponse, expectsContinue: boolean, record: ProxiedRequest, alteration?: Alteration) {
    const corrupt = alteration === 'corrupt';
    const headers: http.OutgoingHttpHeaders = {};
    for (const [name, value] of Object.entries(req.headers)) {
      if (value === undefined || HOP_BY_HOP.has(name)) continue;
      headers[name] = value;
    }
    const upstream = http.request({ host: target.host, port: target.port, method: req.method, path: req.url, headers, agent });
    let finished = false;
    const fail = () => {
      if (finished) return;
      finished = true;
      upstream.destroy();
      // A network failure, not an S3 answer.
      resetSocket(req.socket);
    };
    res.on('close', () => {
      if (!res.writableFinished) fail();
    });
    if (expectsContinue) upstream.on('continue', () => res.writeContinue());
    upstream.on('response', (upRes) => {
      if (res.destroyed) return upRes.destroy();
      record.status = upRes.statusCode;
      const out: [string, string][] = [];
      const raw = upRes.rawHeaders;
      for (let i = 0; i + 1 < raw.length; i += 2) {
        const name = raw[i]!;
        const lower = name.toLowerCase();
        if (HOP_BY_HOP.has(lower) || lower === 'transfer-encoding') continue;
        if (alteration === 'strip-metadata' && lower.startsWith('x-amz-meta-')) continue;
        if (alteration === 'weak-etag' && lower === 'etag') {
          out.push([name, `W/${raw[i + 1]!}`]);
          continue;
        }
        out.push([name, raw[i + 1]!]);
      }
      res.writeHead(upRes.statusCode ?? 502, upRes.statusMessage, out.flat());
      pipeline(upRes, new Throttle(downPacer, () => current), res, (err) => {
        if (err) fail();
        else finished = true;
      });
    });
    upstream.on('error', fail);
    const pipe = (err: NodeJS.ErrnoException | null) => {
      if (err) fail();
    };
    if (corrupt) pipeline(req, flipFirstByte(), new Throttle(upPacer, () => current), upstream, pipe);
    else pipeline(req, new Throttle(upPacer, () => current), upstream, pipe);
  }

  function handle(req: http.IncomingMessage, res: http.ServerResponse, expectsContinue: boolean) {
    count++;
    const record: ProxiedRequest = { method: req.method ?? '', url: req.url ?? '' };
    seen.push(record);
    const mode = current;
    switch (mode.kind) {
      case 'pass':
      case 'bandwidth':
        return forward(req, res, expectsContinue, record);
      case 'delay': {
        req.pause();
        const t = later(mode.ms, () => forward(req, res, expectsContinue, record));
        res.on('close', () => cancel(t));
        return;
      }
      case 'stall':
      case 'hang':
        req.resume(); // read and discard; never answer
        return;
      case 'reset':
        return resetSocket(req.socket);
      case 'status':
        return answerStatus(req, res, mode.status, expectsContinue, record);
      case 'flaky': {
        if (random() >= mode.failRatio) return forward(req, res, expectsContinue, record);
        return answerStatus(req, res, random() < 0.5 ? 500 : 503, expectsContinue, record);
      }
      case 'script': {
        const decision = mode.decide({ method: record.method, url: record.url });
        if (decision === 'hang') {
          req.resume(); // read and discard; never answer
          return;
        }
        if (typeof decision === 'object') {
          req.pause();
          const t = later(decision.delayMs, () => forward(req, res, expectsContinue, record));
          res.on('close', () => cancel(t));
          return;
        }
        if (typeof decision === 'string') return forward(req, res, expectsContinue, record, decision === 'pass' ? undefined : decision);
        return answerStatus(req, res, decision, expectsContinue, record);
      }
      case 'refuse':
        // Only on a connection accepted just before the switch; treat it as gone.
        return resetSocket(req.socket);
    }
  }

  const server = http.createServer({ requestTimeout: 0, keepAliveTimeout: 5_000 });
  server.on('request', (req, res) => handle(req, res, false));
  server.on('checkContinue', (req, res) => handle(req, res, true));
  server.on('connection', (socket: Socket) => {
    if (current.kind === 'refuse' || stopped) return socket.destroy();
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
  });
  server.on('clientError', (_err, socket) => socket.destroy());

  function listenOnce(wantPort: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const onError = (err: Error) => {
        server.off('listening', onListening);
        reject(err);
      };
      const onListening = () => {
        server.off('error', onError);
        listening = true;
        if (stopped || (port !== 0 && current.kind === 'refuse')) void closeListener(); // a relisten that 'refuse' overtook
        resolve();
      };
      server.once('error', onError);
      server.once('listening', onListening);
      server.listen(wantPort, '127.0.0.1');
    });
  }

  async function relisten(): Promise<void> {
    let lastError: unknown;
    for (let attempt = 0; attempt < 20; attempt++) {
      if (stopped || current.kind === 'refuse') return;
      try {
        await listenOnce(port);
        return;
      } catch (err) {
        lastError = err;
        if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE') break;
        await backoff(50 * (attempt + 1));
      }
    }
    throw new Error(`fault proxy could not listen on 127.0.0.1:${port} again: ${String(lastError)}`);
  }

  function closeListener(): Promise<void> {
    if (!listening) return Promise.resolve();
    listening = false;
    return new Promise((resolve) => server.close(() => resolve()));
  }

  /** Brings the listening socket in line with the current mode. */
  function reconcile(): Promise<void> {
    transition = transition
      .catch(() => {})
      .then(async () => {
        if (stopped) return;
        if (current.kind === 'refuse') {
          const closed = closeListener();
          await dropAllConnections();
          await closed;
        } else if (!listening) {
          await relisten();
        }
      });
    return transition;
  }

  // A reserved port: 'refuse' closes the listener and a later mode listens on the same port again.
  return reservedPort().then(listenOnce).then(() => {
    port = (server.address() as AddressInfo).port;
    const proxy: FaultProxy = {
      endpoint: `http://127.0.0.1:${port}`,
      port,
      mode: () => ({ ...current }),
      requestCount: () => count,
      requests: () => seen,
      setMode(mode: FaultMode) {
        if (stopped) throw new Error('fault proxy is stopped');
        const next = validate(mode);
        const prev = current;
        current = next;
        if (next.kind === 'flaky') random = seededRandom(next.seed);
        if (next.kind === 'refuse' || prev.kind === 'refuse' || !listening) void reconcile().catch(() => {});
        else if (prev.kind === 'hang' && FORWARDING.has(next.kind)) {
          // The network is back: what it swallowed stays swallowed, new requests go through.
        } else if (!(FORWARDING.has(prev.kind) && FORWARDING.has(next.kind))) {
          const dropped = dropAllConnections();
          transition = transition.catch(() => {}).then(() => dropped);
        }
      },
      settled: () => transition,
      async stop() {
        if (stopped) return;
        stopped = true;
        const closed = closeListener();
        dropAllConnections();
        server.closeAllConnections();
        agent.destroy();
        for (const [t, wake] of backoffs) {
          clearTimeout(t);
          wake();
        }
        backoffs.clear();
        await closed;
        await transition.catch(() => {});
      },
    };
    if (current.kind === 'refuse') void reconcile().catch(() => {});
    return proxy;
  });
}
