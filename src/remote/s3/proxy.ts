/**
 * Proxies the way AWS tooling honours them: HTTPS_PROXY / HTTP_PROXY (and lower-case forms),
 * with NO_PROXY exempting hosts. proxy-from-env implements exactly those rules; hpagent
 * tunnels through the proxy with keep-alive. The AWS SDK for JavaScript does neither itself.
 */
import { getProxyForUrl } from 'proxy-from-env';
import { HttpProxyAgent, HttpsProxyAgent } from 'hpagent';
import type http from 'node:http';
import type https from 'node:https';

export interface ProxyAgents {
  url: string;
  httpAgent: http.Agent;
  httpsAgent: https.Agent;
}

export function proxyAgentsFor(endpoint: string): ProxyAgents | undefined {
  const proxy = getProxyForUrl(endpoint);
  if (!proxy) return undefined;
  const options = { keepAlive: true, maxSockets: 64, proxy };
  return { url: redactCredentials(proxy), httpAgent: new HttpProxyAgent(options), httpsAgent: new HttpsProxyAgent(options) };
}

/** For logs: http://user:secret@proxy:3128 → http://user:***@proxy:3128. */
export function redactCredentials(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = '***';
    return parsed.toString();
  } catch {
    return '(unparseable proxy URL)';
  }
}
