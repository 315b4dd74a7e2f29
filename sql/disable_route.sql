--
-- disable_route: disable_after of add_webhook() (default, NULL, bad values),
-- the 'disabled' state in notifier.stats with its reason, and resume_route()
-- of a disabled route.  (The worker disabling a route on 410 Gone or after
-- disable_after, and the NOTIFY on pg_notifier_events, need the worker and a
-- receiver: test/integration/test_webhook_disable.py.)
--
\set VERBOSITY default
SET client_min_messages = error;	-- no worker serves this database

SELECT notifier.add_webhook('dis', 'http://127.0.0.1:9/a') AS dflt \gset
SELECT notifier.add_webhook('dis', 'http://127.0.0.1:9/b', disable_after => NULL) AS never \gset
SELECT notifier.add_webhook('dis', 'http://127.0.0.1:9/c?token=s3cret', disable_after => '90 minutes') AS short \gset
SELECT id = :dflt AS dflt, id = :never AS never, disable_after, failing_since,
	   disabled_at, disabled_reason
  FROM notifier.routes WHERE channel = 'dis' ORDER BY id;
RESET client_min_messages;

-- bad values: zero, negative, mixed signs that add up to nothing or less
SELECT notifier.add_webhook('dis', 'http://127.0.0.1:9/', disable_after => '0');
SELECT notifier.add_webhook('dis', 'http://127.0.0.1:9/', disable_after => '-1 second');
SELECT notifier.add_webhook('dis', 'http://127.0.0.1:9/', disable_after => '1 day -24 hours');
-- nor written by hand
\set VERBOSITY terse
UPDATE notifier.routes SET disable_after = '-5 days' WHERE id = :dflt;
UPDATE notifier.routes SET disabled_at = now() WHERE id = :dflt;
\set VERBOSITY default
SELECT count(*) AS routes FROM notifier.routes WHERE channel = 'dis';

-- every route active
SELECT route_id = :dflt AS dflt, state, state_reason
  FROM notifier.stats WHERE channel = 'dis' ORDER BY route_id;

-- disabled (as the worker does it), then paused: still disabled, with its reason
UPDATE notifier.routes SET disabled_at = now(), failing_since = now() - interval '5 days',
	   disabled_reason = 'the endpoint answered HTTP status 410 Gone'
 WHERE id = :dflt;
SELECT notifier.pause_route(:dflt);
SELECT route_id = :dflt AS dflt, state, state_reason
  FROM notifier.stats WHERE channel = 'dis' ORDER BY route_id;

-- resumed: active, the failures forgotten
SELECT notifier.resume_route(:dflt);
SELECT route_id = :dflt AS dflt, state, state_reason
  FROM notifier.stats WHERE channel = 'dis' ORDER BY route_id;
SELECT paused, failing_since, disabled_at, disabled_reason
  FROM notifier.routes WHERE id = :dflt;

-- resume_route(): NULL, unknown route, a queue route
SELECT notifier.resume_route(NULL);
SELECT notifier.resume_route(-1);
SET client_min_messages = error;
SELECT notifier.add_queue('dis_q') AS q \gset
RESET client_min_messages;
\set VERBOSITY sqlstate
SELECT notifier.resume_route(:q);
\set VERBOSITY default

-- pg_monitor sees the state and reason, not the URL's query string
UPDATE notifier.routes SET disabled_at = now(),
	   disabled_reason = 'no successful delivery for disable_after since then'
 WHERE id = :short;
CREATE ROLE dis_monitor IN ROLE pg_monitor;
SET ROLE dis_monitor;
SELECT state, state_reason, target FROM notifier.stats WHERE route_id = :short;
RESET ROLE;
DROP ROLE dis_monitor;

SELECT count(notifier.remove_route(id)) AS removed
  FROM notifier.routes WHERE channel IN ('dis', 'dis_q');
