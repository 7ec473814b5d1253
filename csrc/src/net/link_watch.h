/* Silent links (link_watch.c): the kernel's own deadline on the TCP
 * connections under the rails, so that a link that dies without a reset
 * ends in a connection error, which the failover (progress.c) handles. */
#ifndef IXFER_NET_LINK_WATCH_H
#define IXFER_NET_LINK_WATCH_H

#include "net/agent.h"

/* Progress thread, on every pass: when the agent has a link timeout, its
 * wire is kernel TCP, and ops were posted or work submitted since the last
 * look (or it never looked), sets TCP_USER_TIMEOUT and keepalive on the
 * agent's sockets that lack them; at most every 250 ms (less often where
 * looking is slow). */
void ixfer_link_watch_tick(struct ixfer_agent *a);

#endif
