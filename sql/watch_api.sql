--
-- watch(), unwatch(), watch_options() and notifier.watches: clear errors for
-- what cannot be watched, triggers written by hand, names that cannot
-- collide, renames, and no input echoed whole
--
\set VERBOSITY default
CREATE TABLE w (id int PRIMARY KEY, a text);
CREATE TABLE w_nokey (a text);

-- a regclass that names no relation
SELECT notifier.watch(0::regclass);
CREATE TABLE w_gone (id int);
SELECT 'w_gone'::regclass::oid AS gone_oid \gset
DROP TABLE w_gone;
SELECT regexp_replace(try(format('SELECT notifier.watch(%s::regclass)', :gone_oid)), '\d+', 'N') AS error;
SELECT regexp_replace(try(format('SELECT notifier.unwatch(%s::regclass)', :gone_oid)), '\d+', 'N') AS error;

-- unwatch of what is never watched is no error, and does not speak of watch
SELECT notifier.unwatch('pg_class');
SELECT notifier.unwatch('notifier.payloads');

-- watch_options() of a trigger that is not pg_notifier's
CREATE FUNCTION other_trigger() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NULL; END$$;
CREATE TRIGGER other AFTER INSERT ON w FOR EACH ROW EXECUTE FUNCTION other_trigger();
SELECT regexp_replace(try(format('SELECT notifier.watch_options(%s)', oid)), '\d+', 'N') AS error
  FROM pg_trigger WHERE tgname = 'other';
DROP TRIGGER other ON w;
SELECT notifier.watch_options(0);

-- a trigger written by hand with a bad argument: the view shows it as
-- invalid, with the reason, and watch()/unwatch() of its table still work
CREATE TRIGGER by_hand AFTER INSERT ON w FOR EACH ROW
	EXECUTE FUNCTION notifier.notify_change('colour=red');
SELECT "table", channel, payload, valid, error, triggers FROM notifier.watches
 WHERE "table" = 'w'::regclass;
SELECT notifier.watch('w', channel => 'good');
SELECT "table", channel, payload, valid, error, triggers FROM notifier.watches
 WHERE "table" = 'w'::regclass ORDER BY channel;
SELECT notifier.unwatch('w', 'good');
SELECT notifier.unwatch('w');				-- its channel is the table's name
SELECT count(*) AS watches FROM notifier.watches WHERE "table" = 'w'::regclass;

-- channels "orders" and "orders_truncate" on one table: no name collides
SELECT notifier.watch('w', channel => 'orders');
SELECT notifier.watch('w', channel => 'orders_truncate');
SELECT channel, triggers FROM notifier.watches WHERE "table" = 'w'::regclass ORDER BY channel;
-- a long channel: names cut, with a hash, still apart
SELECT notifier.watch('w', channel => repeat('c', 60) || '_1');
SELECT notifier.watch('w', channel => repeat('c', 60) || '_2');
SELECT channel, triggers FROM notifier.watches WHERE channel LIKE 'ccc%' ORDER BY channel;
SELECT notifier.unwatch('w', c) FROM unnest(ARRAY['orders', 'orders_truncate',
	repeat('c', 60) || '_1', repeat('c', 60) || '_2']) c;

-- triggers of 0.1 (notifier_<channel>[_truncate]) are still found by channel
CREATE TRIGGER notifier_old AFTER INSERT OR UPDATE OR DELETE ON w FOR EACH ROW
	EXECUTE FUNCTION notifier.notify_change('channel=old', 'payload=row');
CREATE TRIGGER notifier_old_truncate AFTER TRUNCATE ON w FOR EACH STATEMENT
	EXECUTE FUNCTION notifier.notify_change('channel=old', 'payload=row');
SELECT channel, triggers FROM notifier.watches WHERE "table" = 'w'::regclass;
SELECT notifier.watch('w', channel => 'old', payload => 'keys');		-- replaces them
SELECT channel, payload, triggers FROM notifier.watches WHERE "table" = 'w'::regclass;
CREATE TRIGGER notifier_old AFTER INSERT ON w FOR EACH ROW
	EXECUTE FUNCTION notifier.notify_change('channel=old');
SELECT notifier.unwatch('w', 'old');
SELECT count(*) AS triggers FROM pg_trigger WHERE tgrelid = 'w'::regclass;

-- after a rename, unwatch(table) finds the watch watch(table) made
CREATE TABLE rn (id int PRIMARY KEY);
SELECT notifier.watch('rn');
ALTER TABLE rn RENAME TO rn2;
SELECT channel FROM notifier.watches WHERE "table" = 'rn2'::regclass;
SELECT notifier.unwatch('rn2');
SELECT notifier.watch('rn2', channel => 'x1');
SELECT notifier.watch('rn2', channel => 'x2');
SELECT notifier.unwatch('rn2');				-- which one? an error says so
SELECT notifier.unwatch('rn2', c) FROM unnest(ARRAY['x1', 'x2']) c;

-- inheritance children: watch() warns that their rows are not reported
CREATE TABLE inh_parent (id int PRIMARY KEY);
CREATE TABLE inh_child () INHERITS (inh_parent);
SELECT notifier.watch('inh_parent');
SELECT notifier.unwatch('inh_parent');

-- payload=keys on a table without a key: refused by watch(), and by a
-- trigger written by hand when it first fires
SELECT notifier.watch('w_nokey', payload => 'keys');
CREATE TRIGGER by_hand AFTER INSERT ON w_nokey FOR EACH ROW
	EXECUTE FUNCTION notifier.notify_change('payload=keys');
INSERT INTO w_nokey VALUES ('x');
DROP TRIGGER by_hand ON w_nokey;

-- input is echoed clipped, never whole
SELECT notifier.watch('w', payload => repeat('p', 100000));
SELECT notifier.watch('w', on_oversize => repeat('é', 50000));
SELECT notifier.watch('w', events => ARRAY[repeat('e', 100000)]);
SELECT notifier.watch('w', dedup => NULL, level => repeat('l', 1000));
SELECT notifier.watch('w', columns => ARRAY['a,' || repeat('"', 1001)]);
SELECT notifier.watch('w', condition => 'NEW.a = ' || repeat('1 + ', 10000));
SELECT notifier.watch('w', condition => 'NEW.nope > ' || repeat('1 + ', 1000) || '1');
DO $$BEGIN
	EXECUTE format('CREATE TRIGGER by_hand AFTER INSERT ON w FOR EACH ROW EXECUTE FUNCTION notifier.notify_change(%L, %L)',
				   'channel=a', 'x' || repeat('y', 3000));
END$$;
INSERT INTO w VALUES (1);
SELECT channel, valid, error FROM notifier.watches WHERE "table" = 'w'::regclass;
DROP TRIGGER by_hand ON w;
DO $$BEGIN
	EXECUTE format('CREATE TRIGGER by_hand AFTER INSERT ON w FOR EACH ROW EXECUTE FUNCTION notifier.notify_change(%L)',
				   repeat('z', 3000) || '=1');
END$$;
INSERT INTO w VALUES (1);
SELECT channel, valid, error FROM notifier.watches WHERE "table" = 'w'::regclass;
DROP TRIGGER by_hand ON w;

-- a webhook URL is refused above 2048 bytes, and never echoed whole
SELECT notifier.add_webhook('w', 'https://example.com/' || repeat('u', 1000000));
SELECT notifier.add_webhook('w', 'https://example.com/' || repeat('u', 2000) || ' x');
SELECT notifier.add_webhook('w', 'ftp://example.com/' || repeat('u', 2000));
SELECT notifier.add_webhook('w', 'https://example.com/', headers => jsonb_build_object(repeat('h', 3000) || ' ', 'v'));
SELECT count(*) AS routes FROM notifier.routes WHERE channel = 'w';

DROP TABLE w, w_nokey, rn2, inh_parent, inh_child;
DROP FUNCTION other_trigger();
