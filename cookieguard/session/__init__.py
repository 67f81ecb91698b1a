"""The session decision: read the app's cookies, plan, refresh once, write the cookies back.

repair (the I/O shell) gathers facts and runs plan (pure) -> refresh (single-flight, limits, the
reject-storm guard) -> merge (pure: the browser's cookies, a session as one value). layouts/ knows
where each kind of app keeps its session; nothing here knows HTTP beyond a Cookie header.
"""
