--
-- names that need quoting, in schema, table, column and channel
--
SELECT listen('Odd "Table"', 'odd.channel');
CREATE SCHEMA "My Schema";
CREATE TABLE "My Schema"."Odd ""Table""" (
	"Id" int PRIMARY KEY,
	"Column, With Comma" text,
	"quote""d" text,
	"dot.ted" text,
	"UPPER" int,
	"naïve" text
);
SELECT notifier.watch('"My Schema"."Odd ""Table"""',
					  exclude => ARRAY['UPPER'],
					  columns => ARRAY['Column, With Comma', 'quote"d', 'naïve', 'Id']);
SELECT "table", channel, columns, exclude, triggers FROM notifier.watches;
INSERT INTO "My Schema"."Odd ""Table""" VALUES (1, 'a,b', 'q"q', 'd.d', 5, 'ü');
UPDATE "My Schema"."Odd ""Table""" SET "quote""d" = 'new' WHERE "Id" = 1;
SELECT * FROM ev;

-- a channel with a dot and a condition naming quoted columns
SELECT notifier.watch('"My Schema"."Odd ""Table"""', channel => 'odd.channel',
					  condition => 'NEW."UPPER" > OLD."UPPER"', events => ARRAY['update']);
UPDATE "My Schema"."Odd ""Table""" SET "UPPER" = 4;
UPDATE "My Schema"."Odd ""Table""" SET "UPPER" = 6;
SELECT * FROM ev;
SELECT channel, condition FROM notifier.watches ORDER BY channel;

-- renaming the table or a column is seen at once
ALTER TABLE "My Schema"."Odd ""Table""" RENAME COLUMN "naïve" TO "naive";
ALTER TABLE "My Schema"."Odd ""Table""" RENAME TO plain;
INSERT INTO "My Schema".plain VALUES (2, 'x', 'y', 'z', 1, 'n');
SELECT * FROM ev;

-- an excluded column renamed stays excluded (tracked by attribute number)
SELECT notifier.watch('"My Schema".plain', channel => 'odd.channel', exclude => ARRAY['UPPER']);
ALTER TABLE "My Schema".plain RENAME COLUMN "UPPER" TO upper2;
INSERT INTO "My Schema".plain VALUES (5, 'x', 'y', 'z', 1, 'n');
ALTER TABLE "My Schema".plain RENAME COLUMN upper2 TO "UPPER";
SELECT notifier.unwatch('"My Schema".plain', 'odd.channel');
SELECT * FROM ev;

-- a column added later appears; a watched column dropped breaks nothing silently
ALTER TABLE "My Schema".plain ADD COLUMN extra int DEFAULT 7;
SELECT notifier.watch('"My Schema".plain', channel => 'Odd "Table"');
INSERT INTO "My Schema".plain VALUES (3, 'x', 'y', 'z', 1, 'n');
ALTER TABLE "My Schema".plain DROP COLUMN "dot.ted";
INSERT INTO "My Schema".plain VALUES (4, 'x', 'y', 1, 'n');
SELECT * FROM ev;

-- the channel name as long as NOTIFY allows: 63 bytes, and a trigger name that fits
SELECT notifier.watch('"My Schema".plain', channel => repeat('c', 63));
SELECT channel = repeat('c', 63) AS full_channel, length(triggers[1]) <= 63 AS name_fits
  FROM notifier.watches WHERE channel LIKE 'ccc%';
SELECT notifier.unwatch('"My Schema".plain', repeat('c', 63));
DROP SCHEMA "My Schema" CASCADE;
