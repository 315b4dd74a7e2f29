/*-------------------------------------------------------------------------
 *
 * denied_networks.c
 *	  pg_notifier.denied_networks: the networks no webhook may connect to.
 *
 * A webhook URL is chosen by whoever may add routes, and the worker sends
 * from inside the database server's network: without a guard a route could
 * reach the cloud metadata service (169.254.169.254 and friends) or other
 * hosts only the server can see.  Host names cannot be checked when a route
 * is added (DNS answers change, and one address has many spellings:
 * 2852039166, 0xa9.0xfe.0xa9.0xfe, [::ffff:169.254.169.254]), so the check
 * is made on the address the worker actually connects to, in libcurl's
 * open-socket callback (see worker/sinks/webhook_http.c).
 *
 * The setting is parsed once by its check hook, in any backend, into a
 * malloc'd array kept as the GUC's "extra"; the assign hook makes it the
 * current one.  An IPv4-mapped IPv6 address is checked as its IPv4 address.
 *
 * Copyright (c) 2026, pg_notifier developers; PostgreSQL Licence (LICENSE)
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include "mb/pg_wchar.h"
#include "utils/varlena.h"

#include "common/denied_networks.h"

typedef struct Network
{
	int			family;			/* AF_INET or AF_INET6 */
	int			bits;			/* prefix length */
	unsigned char addr[16];		/* 4 bytes for AF_INET */
} Network;

typedef struct NetworkList
{
	int			n;
	Network		nets[FLEXIBLE_ARRAY_MEMBER];
} NetworkList;

static const NetworkList *denied = NULL;

/* one "address/bits" (or a bare address: every bit) into *net */
static bool
parse_network(const char *text, Network *net)
{
	char		buf[INET6_ADDRSTRLEN + 8];
	char	   *slash;
	int			maxbits;

	if (strlen(text) >= sizeof(buf))
		return false;
	strcpy(buf, text);
	slash = strchr(buf, '/');
	if (slash != NULL)
		*slash = '\0';
	memset(net, 0, sizeof(*net));
	if (inet_pton(AF_INET, buf, net->addr) == 1)
	{
		net->family = AF_INET;
		maxbits = 32;
	}
	else if (inet_pton(AF_INET6, buf, net->addr) == 1)
	{
		net->family = AF_INET6;
		maxbits = 128;
	}
	else
		return false;
	net->bits = maxbits;
	if (slash != NULL)
	{
		char	   *end;
		long		bits;

		if (!isdigit((unsigned char) slash[1]))
			return false;
		errno = 0;
		bits = strtol(slash + 1, &end, 10);
		if (errno != 0 || *end != '\0' || bits > maxbits)
			return false;
		net->bits = (int) bits;
	}
	return true;
}

static bool
prefix_matches(const unsigned char *a, const unsigned char *b, int bits)
{
	int			whole = bits / 8;
	int			rest = bits % 8;

	if (memcmp(a, b, whole) != 0)
		return false;
	if (rest == 0)
		return true;
	return ((a[whole] ^ b[whole]) & (0xFF << (8 - rest)) & 0xFF) == 0;
}

bool
check_denied_networks(char **newval, void **extra, GucSource source)
{
	char	   *raw = pstrdup(*newval);
	List	   *items;
	ListCell   *lc;
	NetworkList *list;
	int			i = 0;

	if (!SplitGUCList(raw, ',', &items))
	{
		GUC_check_errdetail("List syntax is invalid.");
		return false;
	}
	list = malloc(offsetof(NetworkList, nets) +
				  Max(list_length(items), 1) * sizeof(Network));
	if (list == NULL)
		return false;
	foreach(lc, items)
	{
		const char *item = lfirst(lc);

		if (!parse_network(item, &list->nets[i]))
		{
			int			len = pg_mbcliplen(item, strlen(item), 64);

			GUC_check_errdetail("\"%.*s\" is not a network in CIDR notation.", len, item);
			GUC_check_errhint("Give a comma-separated list such as \"169.254.0.0/16, fe80::/10\".");
			free(list);
			return false;
		}
		i++;
	}
	list->n = i;
	*extra = list;
	return true;
}

void
assign_denied_networks(const char *newval, void *extra)
{
	denied = extra;
}

/*
 * Whether an address the worker is about to connect to lies in a denied
 * network.  An IPv4-mapped IPv6 address (::ffff:a.b.c.d) is its IPv4
 * address.
 */
bool
address_denied(const struct sockaddr *addr)
{
	int			family;
	const unsigned char *bytes;

	if (denied == NULL)
		return false;
	if (addr->sa_family == AF_INET)
	{
		family = AF_INET;
		bytes = (const unsigned char *) &((const struct sockaddr_in *) addr)->sin_addr;
	}
	else if (addr->sa_family == AF_INET6)
	{
		const struct in6_addr *a6 = &((const struct sockaddr_in6 *) addr)->sin6_addr;

		if (IN6_IS_ADDR_V4MAPPED(a6))
		{
			family = AF_INET;
			bytes = a6->s6_addr + 12;
		}
		else
		{
			family = AF_INET6;
			bytes = a6->s6_addr;
		}
	}
	else
		return false;

	for (int i = 0; i < denied->n; i++)
		if (denied->nets[i].family == family &&
			prefix_matches(bytes, denied->nets[i].addr, denied->nets[i].bits))
			return true;
	return false;
}
