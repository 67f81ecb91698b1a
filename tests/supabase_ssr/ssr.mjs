// Runs the real @supabase/ssr cookie code for cookieguard's tests (tests/test_supabase_cookie.py).
//
// One JSON request on stdin, one JSON answer on stdout. Operations:
//   {"op": "write", "url", "session", "cookieHeader", "cookieOptions"?, "cookieEncoding"?}
//       The cookies a server writes for `session`, through the library's own server storage:
//       createStorageFromOptions(..., isServerClient=true).setItem, then applyServerStorage, the
//       two calls createServerClient makes when auth-js saves a session (SIGNED_IN,
//       TOKEN_REFRESHED). `cookieHeader` is the request's Cookie header (stale chunks are deleted
//       from it); `cookieEncoding: "raw"` writes the plain JSON that @supabase/ssr < 0.4 wrote.
//   {"op": "read", "url", "anonKey", "cookieHeader"}
//       What createServerClient's auth.getSession() returns for these request cookies, plus the
//       cookies it wrote while doing so (a refresh against `url` when the session has expired).
// Every answer carries `setAll` (what the library passed to the cookies adapter) and `setCookie`
// (the same, as Set-Cookie header values by the library's serializeCookieHeader).
import { createServerClient, parseCookieHeader, serializeCookieHeader } from "@supabase/ssr";
import { applyServerStorage, createStorageFromOptions } from "@supabase/ssr/dist/main/cookies.js";

async function readStdin() {
  const parts = [];
  for await (const part of process.stdin) parts.push(part);
  return JSON.parse(Buffer.concat(parts).toString("utf8"));
}

function adapter(cookieHeader) {
  // What a framework's cookie API hands the library: the request's cookies, URI-decoded.
  const cookies = parseCookieHeader(cookieHeader ?? "");
  const writes = [];
  let headers = {};
  return {
    writes,
    headers: () => headers,
    methods: {
      getAll: async () => cookies.map(({ name, value }) => ({ name, value })),
      setAll: async (setCookies, cacheHeaders) => {
        writes.push(...setCookies);
        headers = { ...headers, ...(cacheHeaders ?? {}) };
      },
    },
  };
}

class NoWebSocket {
  constructor() {
    throw new Error("no realtime in these tests");
  }
}

function storageKey(url) {
  // What supabase-js uses when no storageKey is given (SupabaseClient constructor).
  return `sb-${new URL(url).hostname.split(".")[0]}-auth-token`;
}

function answer(cookieAdapter, extra) {
  return {
    ...extra,
    setAll: cookieAdapter.writes,
    headers: cookieAdapter.headers(),
    setCookie: cookieAdapter.writes.map(({ name, value, options }) =>
      serializeCookieHeader(name, value, options),
    ),
  };
}

async function write(request) {
  const cookieAdapter = adapter(request.cookieHeader);
  const cookieEncoding = request.cookieEncoding ?? "base64url";
  const options = { cookies: cookieAdapter.methods, cookieOptions: request.cookieOptions };
  const { storage, getAll, setAll, setItems, removedItems } = createStorageFromOptions(
    { ...options, cookieEncoding },
    true,
  );
  const key = request.cookieOptions?.name ?? storageKey(request.url);
  // auth-js's setItemAsync stores JSON.stringify(session).
  await storage.setItem(key, JSON.stringify(request.session));
  await applyServerStorage(
    { getAll, setAll, setItems, removedItems },
    { cookieOptions: request.cookieOptions ?? null, cookieEncoding },
  );
  return answer(cookieAdapter, { key });
}

async function read(request) {
  const cookieAdapter = adapter(request.cookieHeader);
  const client = createServerClient(request.url, request.anonKey ?? "anon-key", {
    cookies: cookieAdapter.methods,
    cookieOptions: request.cookieOptions,
    // supabase-js 2.119 builds a realtime client eagerly and refuses Node 20, which has no
    // global WebSocket; nothing here opens a channel, so a transport that is never used does.
    realtime: { transport: NoWebSocket },
  });
  const { data, error } = await client.auth.getSession();
  // JSON round trip: the server client wraps `user` in a warning proxy.
  const session = data.session ? JSON.parse(JSON.stringify(data.session)) : null;
  return answer(cookieAdapter, {
    session,
    error: error ? { name: error.name, code: error.code ?? null, status: error.status ?? null } : null,
  });
}

const request = await readStdin();
const ops = { write, read };
if (!(request.op in ops)) throw new Error(`unknown op ${request.op}`);
process.stdout.write(JSON.stringify(await ops[request.op](request)));
