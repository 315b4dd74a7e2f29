--
-- watch(), unwatch(), the watches view, and each option's effect
--
SELECT listen('orders', 'shop', 'Mixed Case');
CREATE TABLE orders (id int PRIMARY KEY, status text, total numeric, card_no text);

-- defaults: channel = table name, payload = row, every event
SELECT notifier.watch('orders');
SELECT "table", channel, payload, columns, exclude, events, condition, on_oversize, triggers
  FROM notifier.watches;
INSERT INTO orders VALUES (1, 'new', 10, '4111');
UPDATE orders SET status = 'paid' WHERE id = 1;
DELETE FROM orders WHERE id = 1;
TRUNCATE orders;
SELECT * FROM ev;

-- watch() again replaces the options of the same (table, channel)
SELECT notifier.watch('orders', exclude => ARRAY['card_no'], events => ARRAY['insert', 'UPDATE']);
SELECT "table", channel, exclude, events, triggers FROM notifier.watches;
INSERT INTO orders VALUES (2, 'new', 20, '4222');
UPDATE orders SET total = 21 WHERE id = 2;
DELETE FROM orders WHERE id = 2;
TRUNCATE orders;
SELECT * FROM ev;

-- a second channel on the same table, with only some columns
SELECT notifier.watch('orders', channel => 'shop', columns => ARRAY['status']);
SELECT "table", channel, columns, triggers FROM notifier.watches ORDER BY channel;
INSERT INTO orders VALUES (3, 'new', 30, '4333');
-- only total changes: nothing on "shop" (status not watched), an event on "orders"
UPDATE orders SET total = 31 WHERE id = 3;
UPDATE orders SET status = 'sent' WHERE id = 3;
SELECT * FROM ev ORDER BY channel, event;

-- channel names are case-sensitive and taken verbatim
SELECT notifier.watch('orders', channel => 'Mixed Case', events => ARRAY['delete']);
DELETE FROM orders WHERE id = 3;
SELECT * FROM ev ORDER BY channel, event;

-- condition becomes the trigger's WHEN clause
SELECT notifier.unwatch('orders', 'shop');
SELECT notifier.unwatch('orders', 'Mixed Case');
SELECT notifier.watch('orders', condition => 'NEW.total > 100', events => ARRAY['insert', 'update']);
SELECT channel, condition FROM notifier.watches;
INSERT INTO orders VALUES (4, 'small', 5, NULL), (5, 'big', 500, NULL);
UPDATE orders SET status = 'x';
SELECT * FROM ev;

-- unwatch: true when something was watched, a notice and false otherwise
SELECT notifier.unwatch('orders');
SELECT notifier.unwatch('orders');
SELECT count(*) FROM notifier.watches;
INSERT INTO orders VALUES (6, 'unwatched', 1, NULL);
SELECT * FROM ev;

-- a trigger written by hand, with 'name=value' arguments
CREATE TRIGGER by_hand AFTER INSERT OR UPDATE ON orders
  FOR EACH ROW EXECUTE FUNCTION notifier.notify_change('channel=shop', 'payload=keys', 'exclude=card_no');
SELECT "table", channel, payload, exclude, triggers FROM notifier.watches;
INSERT INTO orders VALUES (7, 'manual', 7, '4777');
UPDATE orders SET card_no = '0000' WHERE id = 7;   -- excluded column only: no event
SELECT * FROM ev;
DROP TRIGGER by_hand ON orders;

-- a no-op UPDATE sends nothing; so does an update of an unwatched column
SELECT notifier.watch('orders', exclude => ARRAY['card_no']);
UPDATE orders SET status = status;
UPDATE orders SET card_no = 'zzz';
SELECT * FROM ev;

-- a numeric rewritten with another scale is a change: to_jsonb() shows it
UPDATE orders SET total = 7.00 WHERE id = 7;
SELECT * FROM ev;

-- watch() needs the TRIGGER privilege, as CREATE TRIGGER does
CREATE ROLE notifier_nobody;
SET ROLE notifier_nobody;
SELECT notifier.watch('orders', channel => 'sneaky');
SELECT notifier.unwatch('orders');
RESET ROLE;
GRANT TRIGGER ON orders TO notifier_nobody;
SET ROLE notifier_nobody;
SELECT notifier.watch('orders', channel => 'granted');
RESET ROLE;
SELECT channel FROM notifier.watches ORDER BY channel;
SELECT notifier.unwatch('orders', 'granted');
REVOKE ALL ON orders FROM notifier_nobody;
DROP ROLE notifier_nobody;
DROP TABLE orders;
SELECT count(*) FROM notifier.watches;
