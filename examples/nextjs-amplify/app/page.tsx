export default function Home() {
  return (
    <main>
      <h1>cookieguard + Next.js + Amplify</h1>
      <p>
        <a href="/sign-in">Sign in</a> · <a href="/dashboard">Dashboard</a>
      </p>
    </main>
  );
}
