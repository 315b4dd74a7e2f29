/*-------------------------------------------------------------------------
 *
 * nats_subject.c
 *	  The subject template of a NATS route: checked by add_nats(), filled
 *	  in by the worker for each event.
 *
 * A template is what NATS accepts as a publish subject, dot-separated
 * tokens of printable ASCII without the wildcards '*' and '>', in which
 * {channel}, {schema}, {table} and {op} stand for the event's.  Both sides
 * live here so that what add_nats() accepts is exactly what the worker
 * knows how to fill in.
 *
 * Filled in, a value is lower case and keeps only [a-z0-9_-]: every other
 * byte (a dot, a space, a wildcard, a byte of a multi-byte character)
 * becomes '_', so that a table named "Order Items" or "a.b" stays one
 * token and the subject stays valid whatever the names are; an absent or
 * empty value (a payload that is not one of our events) is "_".  Values
 * are cut at NATS_SUBJECT_VALUE_MAX_BYTES.
 *
 * Copyright (c) 2026, pg_notifier developers; PostgreSQL Licence (LICENSE)
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "lib/stringinfo.h"

#include "common/nats_subject.h"

static const char *const placeholders[NATS_NUM_PLACEHOLDERS] = {
	"{channel}", "{schema}", "{table}", "{op}"
};

/* the placeholder at p, or -1 */
static int
placeholder_at(const char *p)
{
	for (int i = 0; i < NATS_NUM_PLACEHOLDERS; i++)
		if (strncmp(p, placeholders[i], strlen(placeholders[i])) == 0)
			return i;
	return -1;
}

char *
nats_subject_problem(const char *template)
{
	size_t		len = strlen(template);
	bool		token_empty = true;

	if (len == 0)
		return pstrdup("subject must not be empty");
	if (len > NATS_SUBJECT_MAX_BYTES)
		return psprintf("subject is %zu bytes long; the limit is %d bytes",
						len, NATS_SUBJECT_MAX_BYTES);
	for (const char *p = template; *p;)
	{
		unsigned char c = *p;
		int			ph;

		if (c == '.')
		{
			if (token_empty)
				return pstrdup("subject has an empty token");
			token_empty = true;
			p++;
			continue;
		}
		if (c == '{')
		{
			ph = placeholder_at(p);
			if (ph < 0)
				return pstrdup("subject has an unknown placeholder");
			p += strlen(placeholders[ph]);
			token_empty = false;
			continue;
		}
		if (c == '}')
			return pstrdup("subject has a \"}\" outside a placeholder");
		if (c == '*' || c == '>')
			return pstrdup("subject contains a wildcard (\"*\" or \">\")");
		if (c <= ' ' || c >= 0x7f)
			return pstrdup("subject contains a space, a control character or a non-ASCII character");
		token_empty = false;
		p++;
	}
	if (token_empty)
		return pstrdup("subject has an empty token");
	return NULL;
}

static void
append_value(StringInfo buf, const char *value)
{
	int			n = 0;

	for (const char *p = value ? value : ""; *p && n < NATS_SUBJECT_VALUE_MAX_BYTES; p++, n++)
	{
		unsigned char c = *p;

		if (c >= 'A' && c <= 'Z')
			c += 'a' - 'A';
		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-'))
			c = '_';
		appendStringInfoChar(buf, (char) c);
	}
	if (n == 0)
		appendStringInfoChar(buf, '_');
}

char *
nats_subject_fill(const char *template, const char *const *values)
{
	StringInfoData buf;

	initStringInfo(&buf);
	for (const char *p = template; *p;)
	{
		int			ph = *p == '{' ? placeholder_at(p) : -1;

		if (ph < 0)
		{
			appendStringInfoChar(&buf, *p++);
			continue;
		}
		append_value(&buf, values[ph]);
		p += strlen(placeholders[ph]);
	}
	return buf.data;
}
