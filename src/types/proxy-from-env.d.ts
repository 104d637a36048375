declare module 'proxy-from-env' {
  /** The proxy URL for `url` from HTTP_PROXY/HTTPS_PROXY/ALL_PROXY, honouring NO_PROXY; '' for none. */
  export function getProxyForUrl(url: string): string;
}
