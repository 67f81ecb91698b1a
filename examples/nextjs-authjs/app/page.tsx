export default function Home() {
  return (
    <main>
      <h1>cookieguard + Next.js + Auth.js (next-auth 4)</h1>
      <p>
        <a href="/sign-in">Sign in</a> · <a href="/dashboard">Dashboard</a>
      </p>
    </main>
  );
}
