--
-- setup: the extension, and a real LISTEN client to read events back.
--
-- The listener is a second libpq connection (through dblink).  events()
-- has another connection send a sentinel NOTIFY, which, NOTIFY being
-- delivered in commit order, arrives after every event committed before
-- it; so events() returns exactly what was sent so far, and nothing that
-- was not.
--
CREATE EXTENSION pg_notifier;
CREATE EXTENSION dblink;

CREATE FUNCTION test_connstr() RETURNS text LANGUAGE sql AS $$
	SELECT format('dbname=%s host=%s port=%s', current_database(),
				  split_part(current_setting('unix_socket_directories'), ',', 1),
				  current_setting('port'))
$$;

CREATE FUNCTION listen(VARIADIC channels text[]) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
	ch text;
BEGIN
	IF NOT coalesce('listener' = ANY (dblink_get_connections()), false) THEN
		PERFORM dblink_connect('listener', test_connstr());
		PERFORM dblink_connect('sender', test_connstr());
		PERFORM dblink_exec('listener', 'LISTEN test_sentinel');
	END IF;
	FOREACH ch IN ARRAY channels LOOP
		PERFORM dblink_exec('listener', format('LISTEN %I', ch));
	END LOOP;
END
$$;

-- every notification received since the last call: (channel, payload)
CREATE FUNCTION events(OUT channel text, OUT payload text) RETURNS SETOF record
LANGUAGE plpgsql AS $$
DECLARE
	n record;
	done boolean := false;
	deadline timestamptz := clock_timestamp() + interval '20 seconds';
BEGIN
	PERFORM dblink_exec('sender', 'NOTIFY test_sentinel');
	WHILE NOT done LOOP
		FOR n IN SELECT * FROM dblink_get_notify('listener') LOOP
			IF n.notify_name = 'test_sentinel' THEN
				done := true;
			ELSE
				channel := n.notify_name;
				payload := n.extra;
				RETURN NEXT;
			END IF;
		END LOOP;
		IF NOT done THEN
			IF clock_timestamp() > deadline THEN
				RAISE EXCEPTION 'listener got no sentinel';
			END IF;
			PERFORM pg_sleep(0.005);
		END IF;
	END LOOP;
END
$$;

-- an event with what changes from run to run (xid, time, refs) masked
CREATE FUNCTION masked(payload text) RETURNS text LANGUAGE sql AS $$
	SELECT regexp_replace(regexp_replace(regexp_replace(regexp_replace(payload,
		'"id":"\d+\.(\d+)"', '"id":"X.\1"'),
		'"xid":"\d+"', '"xid":"X"'),
		'"ts":"[^"]*"', '"ts":"T"'),
		'"ref":\d+', '"ref":R')
$$;

-- run a statement; its error message with byte counts masked (they depend
-- on the number of digits of the xid)
CREATE FUNCTION try(sql text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
	detail text;
BEGIN
	EXECUTE sql;
	RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS detail = PG_EXCEPTION_DETAIL;
	RETURN regexp_replace(SQLERRM || coalesce(nullif(' (' || detail || ')', ' ()'), ''),
						  'is \d+ bytes', 'is N bytes');
END
$$;

-- the events received so far, masked, in order
CREATE VIEW ev AS SELECT channel, masked(payload) AS event FROM events();

SELECT listen('orders');
SELECT * FROM ev;
