// Signed-in users never see this page: the middleware redirects them to /dashboard.
export default function Home() {
  return (
    <main>
      <h1>cookieguard + Next.js + Supabase</h1>
      <p>
        <a href="/login">Sign in</a> · <a href="/dashboard">Dashboard</a>
      </p>
    </main>
  );
}
