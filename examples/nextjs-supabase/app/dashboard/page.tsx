import { redirect } from 'next/navigation';
import { createClient } from '../../utils/supabase/server';

// A protected page as the template writes it: getUser() asks the auth server who the access token
// belongs to, and anyone without a session goes to /login.
export default async function Dashboard() {
  const supabase = await createClient();
  const { data, error } = await supabase.auth.getUser();
  if (error || !data.user) {
    redirect('/login');
  }
  return (
    <main>
      <h1>Dashboard</h1>
      <p id="user">Signed in as {data.user.email}</p>
      <p>
        <a id="home" href="/">
          / (the middleware redirects signed-in users here)
        </a>
      </p>
    </main>
  );
}
