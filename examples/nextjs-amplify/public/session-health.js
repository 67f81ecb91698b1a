// cookieguard session health check. Include it on the app's pages, configured on its tag:
//   <script src="/session-health.js" defer
//           data-endpoint="/.cookieguard/session"   admin_prefix + "/session"
//           data-sign-in="/login"                   your sign-in page (refresh.login_url)
//           data-interval-ms="60000"></script>      how often to poll while the tab is visible
// It polls cookieguard's session endpoint (same origin, so the browser sends the auth cookies and
// stores the refreshed ones it answers with: no page load needed to keep an idle tab signed in),
// only while the tab is visible, and sends the user to sign in once cookieguard says the session
// is over. IdP or network trouble never does. Each answer is also dispatched on `document` as a
// `cookieguard:session` event (detail: the JSON), for an app that wants to show it.
(function () {
  var tag = document.currentScript, data = (tag && tag.dataset) || {};
  var ENDPOINT = data.endpoint || "/.cookieguard/session";
  var SIGN_IN = data.signIn || "/login";
  var EVERY_MS = Number(data.intervalMs) > 0 ? Number(data.intervalMs) : 60 * 1000;
  var timer = null, signedIn = false;

  function check() {
    fetch(ENDPOINT, { credentials: "include", cache: "no-store", headers: { Accept: "application/json" } })
      .then(function (r) { return r.ok ? r.json() : null; })       // 404: no provider; 5xx: try later
      .then(function (s) {
        if (!s) return;
        document.dispatchEvent(new CustomEvent("cookieguard:session", { detail: s }));
        if (s.authenticated) signedIn = true;
        // Only a session that was there and is now over; anonymous visitors are left alone, and
        // so is the sign-in page itself (a dead session there must not reload it forever).
        var onSignIn = location.pathname === SIGN_IN.split("?")[0];
        if (s.authenticated === false && !onSignIn && (signedIn || s.reason !== "no_session")) {
          clearInterval(timer);
          location.assign(SIGN_IN + "?next=" + encodeURIComponent(location.pathname + location.search));
        }
      })
      .catch(function () {});                                       // offline: try again later
  }

  function schedule() {
    clearInterval(timer);
    timer = null;
    if (document.visibilityState === "visible") { check(); timer = setInterval(check, EVERY_MS); }
  }

  document.addEventListener("visibilitychange", schedule);
  schedule();
})();
