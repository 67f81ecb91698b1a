// The real Auth.js session-cookie code, for cookieguard's authjs layout tests: the JWT `encode`
// and `decode` of @auth/core (v5) and next-auth 4 (v4), their `getToken` (which joins a chunked
// cookie from a Cookie header), and their `SessionStore.chunk` (which splits a value and deletes
// the cookies it replaces). Nothing here re-implements the libraries.
//
// stdin: a JSON array of operations; stdout: a JSON array of answers, one per operation.
//   {"op": "encode", "version": 5|4, "secret": "s" | ["s1", "s2"], "salt": "<cookie name>", "token": {...}}
//       -> {"jwt": "..."}
//   {"op": "decode", "version": 5|4, "secret": ..., "salt": "<cookie name>", "jwt": "..."}
//       -> {"payload": {...}} | {"error": "<error name>"}
//   {"op": "get_token", "version": 5|4, "secret": ..., "cookie": "<Cookie header>", "secure": bool}
//       -> {"payload": {...} | null}
//   {"op": "chunk", "version": 5|4, "name": "<cookie name>", "value": "...", "cookie": "<Cookie header>"}
//       -> {"cookies": [{"name", "value", "max_age"}]}   (max_age 0: a deletion)
//   {"op": "join", "version": 5|4, "name": "<cookie name>", "cookie": "<Cookie header>"}
//       -> {"value": "<the session value SessionStore reads>"}
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

import * as v5 from '@auth/core/jwt';
import { SessionStore as SessionStoreV5 } from './node_modules/@auth/core/lib/utils/cookie.js';

const require = createRequire(import.meta.url);
const here = path.dirname(fileURLToPath(import.meta.url));
const v4 = require('next-auth/jwt');
// Not in next-auth's exports map: required by path.
const { SessionStore: SessionStoreV4 } = require(path.join(here, 'node_modules/next-auth/core/lib/cookie.js'));

const quiet = { debug() {}, warn() {}, error() {} };

function parseCookieHeader(header) {
  const pairs = [];
  for (const part of header.split(/; */)) {
    if (!part) continue;
    const eq = part.indexOf('=');
    pairs.push([part.slice(0, eq), part.slice(eq + 1)]);
  }
  return pairs;
}

// The `cookie` parser @auth/core uses keeps the first of two cookies with one name.
function firstByName(pairs) {
  const cookies = {};
  for (const [name, value] of pairs) if (!(name in cookies)) cookies[name] = value;
  return cookies;
}

function sessionStore(request) {
  const pairs = parseCookieHeader(request.cookie ?? '');
  const option = { name: request.name, options: { httpOnly: true, sameSite: 'lax', path: '/', secure: request.name.startsWith('__Secure-') } };
  return request.version === 4
    ? new SessionStoreV4(option, { cookies: new Map(pairs), headers: {} }, quiet)
    : new SessionStoreV5(option, firstByName(pairs), quiet);
}

async function run(request) {
  const lib = request.version === 4 ? v4 : v5;
  // v5 salts the key with the cookie name; next-auth 4 encodes and decodes its session without one.
  const salt = request.version === 4 ? undefined : request.salt;
  switch (request.op) {
    case 'encode':
      return { jwt: await lib.encode({ token: request.token, secret: request.secret, salt, maxAge: request.max_age }) };
    case 'decode':
      try {
        return { payload: await lib.decode({ token: request.jwt, secret: request.secret, salt }) };
      } catch (error) {
        return { error: error?.code ?? error?.name ?? String(error) };
      }
    case 'get_token': {
      const headers = new Headers({ cookie: request.cookie });
      if (request.version === 4) {
        // next-auth 4 reads `req.cookies` (a Next.js request's RequestCookies: a Map by name).
        const cookies = new Map(parseCookieHeader(request.cookie));
        const payload = await v4.getToken({ req: { cookies, headers }, secret: request.secret, secureCookie: request.secure, logger: quiet });
        return { payload };
      }
      const payload = await v5.getToken({ req: { headers }, secret: request.secret, secureCookie: request.secure, logger: quiet });
      return { payload };
    }
    case 'join':
      return { value: sessionStore(request).value };
    case 'chunk': {
      const store = sessionStore(request);
      const cookies = store.chunk(request.value, {}).map((c) => ({ name: c.name, value: c.value, max_age: c.options.maxAge ?? null }));
      return { cookies };
    }
    default:
      throw new Error(`unknown op ${request.op}`);
  }
}

const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const answers = [];
for (const request of JSON.parse(Buffer.concat(chunks).toString('utf8'))) answers.push(await run(request));
process.stdout.write(JSON.stringify(answers));
