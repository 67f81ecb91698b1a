// next-auth 4 with one OpenID provider and the refresh-token-rotation guide's `jwt` callback
// (authjs.dev/guides/refresh-token-rotation), as an app copies it: refresh when `expires_at` has
// passed, keep the rotated refresh token, and on failure set `error: "RefreshTokenError"` so the
// page can sign the user out. Read at run time, so one build serves any IdP and port.
import type { NextAuthOptions } from 'next-auth';
import type { JWT } from 'next-auth/jwt';

export const secret = () => process.env.NEXTAUTH_SECRET ?? '';
const issuer = () => process.env.OIDC_ISSUER ?? 'http://127.0.0.1:0';

// The provider's token endpoint, called with the refresh token (client_secret_basic).
async function refreshAccessToken(refreshToken: string) {
  const basic = Buffer.from(
    `${encodeURIComponent(process.env.OIDC_CLIENT_ID ?? '')}:${encodeURIComponent(process.env.OIDC_CLIENT_SECRET ?? '')}`,
  ).toString('base64');
  const response = await fetch(`${issuer()}/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Basic ${basic}` },
    body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: refreshToken }),
  });
  const tokens = await response.json();
  if (!response.ok) throw tokens;
  return tokens as { access_token: string; expires_in: number; refresh_token?: string };
}

// The guide's callback body after sign-in: fresh tokens while expires_at lies ahead, else one refresh.
export async function refreshedToken(token: JWT): Promise<JWT> {
  if (Date.now() < (token.expires_at as number) * 1000) return token;
  if (!token.refresh_token) throw new TypeError('Missing refresh_token');
  try {
    const tokens = await refreshAccessToken(token.refresh_token as string);
    return {
      ...token,
      access_token: tokens.access_token,
      expires_at: Math.floor(Date.now() / 1000 + tokens.expires_in),
      // Some providers only issue refresh tokens once, so preserve if we did not get a new one
      refresh_token: tokens.refresh_token ?? token.refresh_token,
    };
  } catch (error) {
    console.error('Error refreshing access_token', (error as { error?: string })?.error ?? error);
    // If we fail to refresh the token, return an error so we can handle it on the page
    return { ...token, error: 'RefreshTokenError' };
  }
}

export const authOptions: NextAuthOptions = {
  secret: secret(),
  session: { strategy: 'jwt' },
  pages: { signIn: '/sign-in' },
  providers: [
    {
      id: 'oidc',
      name: 'Test IdP',
      type: 'oauth',
      wellKnown: `${issuer()}/.well-known/openid-configuration`,
      clientId: process.env.OIDC_CLIENT_ID,
      clientSecret: process.env.OIDC_CLIENT_SECRET,
      authorization: { params: { scope: 'openid email offline_access', prompt: 'consent' } },
      idToken: true,
      checks: ['pkce', 'state'],
      profile(profile) {
        // The id token carries `sub` only (oidc-provider keeps scope claims for userinfo).
        return { id: profile.sub, name: profile.sub, email: profile.email ?? null };
      },
    },
  ],
  callbacks: {
    async jwt({ token, account }) {
      if (account) {
        // First-time login, save the `access_token`, its expiry and the `refresh_token`
        return {
          ...token,
          access_token: account.access_token,
          expires_at: account.expires_at,
          refresh_token: account.refresh_token,
        };
      }
      return refreshedToken(token);
    },
    async session({ session, token }) {
      session.error = token.error as string | undefined;
      return session;
    },
  },
};
