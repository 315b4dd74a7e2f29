/*-------------------------------------------------------------------------
 *
 * denied_networks.h
 *	  pg_notifier.denied_networks: the networks no webhook may connect to.
 *
 * Copyright (c) 2026, pg_notifier developers; PostgreSQL Licence (LICENSE)
 *
 *-------------------------------------------------------------------------
 */
#ifndef NOTIFIER_DENIED_NETWORKS_H
#define NOTIFIER_DENIED_NETWORKS_H

#include <sys/socket.h>

#include "utils/guc.h"

#define NOTIFIER_DENIED_NETWORKS_DEFAULT \
	"0.0.0.0/8, 169.254.0.0/16, fe80::/10, 100.100.100.200/32, fd00:ec2::254/128"

extern bool check_denied_networks(char **newval, void **extra, GucSource source);
extern void assign_denied_networks(const char *newval, void *extra);
extern bool address_denied(const struct sockaddr *addr);

#endif							/* NOTIFIER_DENIED_NETWORKS_H */
