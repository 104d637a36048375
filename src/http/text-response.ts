/** A short plain-text answer; the reason a request failed is always in the body. */
export function textResponse(status: number, message: string, headers: Record<string, string> = {}): Response {
  return new Response(message + '\n', { status, headers: { 'content-type': 'text/plain', ...headers } });
}
