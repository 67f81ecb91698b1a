// cookieguard session health check: include on the app's pages (<script src="/session-health.js" defer>).
// Polls cookieguard's session endpoint (same origin, so the browser sends the auth cookies and
// stores the refreshed ones it answers with), only while the tab is visible, and sends the user
// to sign in once cookieguard says the session is over. IdP or network trouble never does.
(function () {
  var ENDPOINT = "/.cookieguard/session"; // admin_prefix + "/session"
  var SIGN_IN = "/login";                 // your sign-in page (refresh.login_url)
  var EVERY_MS = 60 * 1000;
  var timer = null, signedIn = false;

  function check() {
    fetch(ENDPOINT, { credentials: "include", cache: "no-store", headers: { Accept: "application/json" } })
      .then(function (r) { return r.ok ? r.json() : null; })       // 404: no provider; 5xx: try later
      .then(function (s) {
        if (s && s.authenticated) signedIn = true;
        // Only a session that was there and is now over; anonymous visitors are left alone.
        if (s && s.authenticated === false && (signedIn || s.reason !== "no_session")) {
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
