// The project URL and anon key, read on the server at run time. `next build` inlines
// NEXT_PUBLIC_* variables that are set while it runs; `make e2e` builds without them, so one build
// serves any test server (its port is chosen at run time). An app that talks to Supabase only on
// the server, like this one, needs no browser-side copy of either.
export function supabaseUrl(): string {
  return process.env.NEXT_PUBLIC_SUPABASE_URL!;
}

export function supabaseAnonKey(): string {
  return process.env.NEXT_PUBLIC_SUPABASE_ANON_KEY!;
}
