'use server';

import { redirect } from 'next/navigation';
import { createClient } from '../../utils/supabase/server';

// Supabase's template, app/login/actions.ts: signInWithPassword on the server; the server client
// writes the session cookie (sb-<ref>-auth-token) through Next's cookies().
export async function login(formData: FormData) {
  const supabase = await createClient();
  const { error } = await supabase.auth.signInWithPassword({
    email: String(formData.get('email')),
    password: String(formData.get('password')),
  });
  if (error) {
    redirect(`/login?error=${encodeURIComponent(error.code ?? error.message)}`);
  }
  redirect('/dashboard');
}
