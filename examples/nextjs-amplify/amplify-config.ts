import type { ResourcesConfig } from 'aws-amplify';

// Read at run time on the server (not NEXT_PUBLIC_*, which Next inlines at build time), so one
// build runs against any user pool; the root layout hands the same object to the browser.
export function amplifyConfig(): ResourcesConfig {
  const endpoint = process.env.COGNITO_USER_POOL_ENDPOINT;
  return {
    Auth: {
      Cognito: {
        userPoolId: process.env.COGNITO_USER_POOL_ID ?? '',
        userPoolClientId: process.env.COGNITO_CLIENT_ID ?? '',
        // A Cognito-compatible emulator instead of cognito-idp.<region>.amazonaws.com.
        ...(endpoint ? { userPoolEndpoint: endpoint } : {}),
      },
    },
  };
}
