// What the service checks on each HTTP/2 request before grpc-js sees it.
//
// Node's http2 layer hands grpc-js a header object in which a repeated `authorization`
// keeps only its first value (Node treats it as a single-value header and drops the rest),
// accepts header names nghttp2 lets through although RFC 9113 forbids them (a space, for
// one), and bounds the header list only at 64 KiB. So the raw headers are screened here:
// a repeated authorization reaches the service as every value it had (and is refused as
// ambiguous), a malformed name resets the stream, and a header list over
// MAX_HEADER_LIST_BYTES is answered RESOURCE_EXHAUSTED, as gRPC core answers it.

import http2 from 'node:http2';

export const MAX_HEADER_LIST_BYTES = 16 * 1024;
const NAME = /^(?::[a-z]+|[0-9a-z_.-]+)$/;

/** What is wrong with a request's raw headers: '' (nothing), 'malformed' or 'too-large'. */
export function screen(raw) {
  let size = 0;
  for (let i = 0; i < raw.length; i += 2) {
    if (!NAME.test(raw[i])) return 'malformed';
    size += raw[i].length + String(raw[i + 1]).length + 32; // RFC 9113 section 6.5.2
  }
  return size > MAX_HEADER_LIST_BYTES ? 'too-large' : '';
}

function repeated(raw, name) {
  const values = [];
  for (let i = 0; i < raw.length; i += 2) if (raw[i] === name) values.push(raw[i + 1]);
  return values;
}

/** Put the screen in front of grpc-js's own stream handler on every listening socket. */
export function guard(server) {
  // grpc-js keeps its http2 servers in a private map (grpc-js 1.14; pinned in package.json).
  for (const h2 of server.http2Servers.keys()) {
    const inner = h2.listeners('stream');
    h2.removeAllListeners('stream');
    h2.on('stream', (stream, headers, flags, raw) => {
      const problem = screen(raw ?? []);
      if (problem === 'malformed') {
        stream.close(http2.constants.NGHTTP2_PROTOCOL_ERROR);
        return;
      }
      if (problem === 'too-large') {
        // Read the request to its end first: a stream answered and closed while the client
        // still sends is reset, and gRPC clients then lose the status (INTERNAL).
        let answered = false;
        const answer = () => {
          if (answered || stream.destroyed) return;
          answered = true;
          stream.respond(
            {':status': 200, 'content-type': 'application/grpc', 'grpc-status': '8',
              'grpc-message': 'request headers too large'},
            {endStream: true},
          );
        };
        stream.on('data', () => {});
        stream.on('end', answer);
        stream.on('error', () => {});
        setTimeout(answer, 2000).unref(); // a client that never ends its request
        return;
      }
      const auth = repeated(raw ?? [], 'authorization');
      if (auth.length > 1) headers.authorization = auth;
      for (const listener of inner) listener.call(h2, stream, headers, flags, raw);
    });
  }
}
