/**
 * The connection cap: connections beyond it wait their turn (Nx fails a whole build on a refused
 * one) and are served as others close; only beyond the waiting room is one closed.
 */
import http from 'node:http';
import net from 'node:net';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { connectionLimitsFor, gateConnections } from '../src/http/connection-gate.js';

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** Sends one GET on a new connection; resolves with the status line, or 'closed'. */
function request(port: number): { socket: net.Socket; answer: Promise<string> } {
  const socket = net.connect(port, '127.0.0.1');
  socket.on('error', () => {});
  socket.write('GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n');
  const answer = new Promise<string>((resolve) => {
    let data = '';
    socket.on('data', (chunk: Buffer) => {
      data += chunk.toString('latin1');
      if (data.includes('\r\n\r\n')) resolve(data.split('\r\n')[0]!);
    });
    socket.on('close', () => resolve('closed'));
  });
  return { socket, answer };
}

const settled = <T>(promise: Promise<T>, ms: number) => Promise.race([promise, new Promise<'pending'>((r) => setTimeout(() => r('pending'), ms))]);

describe('gateConnections', () => {
  it('lets connections beyond the cap wait, serves them as others close, and closes only beyond the waiting room', async () => {
    const server = http.createServer((_request, response) => response.end('ok'));
    const gate = gateConnections(server, { maxServed: 2, maxWaiting: 1 });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    cleanups.push(() => new Promise((r) => server.close(r)));
    cleanups.push(() => server.closeAllConnections());
    const port = (server.address() as AddressInfo).port;

    const first = request(port);
    const second = request(port);
    expect(await first.answer).toBe('HTTP/1.1 200 OK');
    expect(await second.answer).toBe('HTTP/1.1 200 OK');
    // Both keep-alive connections stay open: the third waits, the fourth has no room.
    const third = request(port);
    const fourth = request(port);
    cleanups.push(() => [first, second, third, fourth].forEach(({ socket }) => socket.destroy()));
    expect(await settled(third.answer, 300)).toBe('pending');
    expect(await fourth.answer).toBe('closed');
    expect(gate.served()).toBe(2);
    expect(gate.waiting()).toBe(1);

    first.socket.destroy();
    expect(await settled(third.answer, 2000)).toBe('HTTP/1.1 200 OK');
    expect(gate.waiting()).toBe(0);
  });

  it('sizes the limits from the open-files limit, within bounds', () => {
    expect(connectionLimitsFor(65_536)).toEqual({ maxServed: 4096, maxWaiting: 40_960 });
    expect(connectionLimitsFor(1024)).toEqual({ maxServed: 256, maxWaiting: 256 });
    const { maxServed, maxWaiting } = connectionLimitsFor(20_000);
    // Two descriptors per connection served, one per connection waiting: a quarter of the limit left.
    expect(2 * maxServed + maxWaiting).toBeLessThanOrEqual(0.75 * 20_000);
  });
});
