#ifndef IXFER_NET_FABRIC_INFO_H
#define IXFER_NET_FABRIC_INFO_H

#include <rdma/fabric.h>

#include "ixfer.h"

/* Hints for an RDM endpoint with RMA and messages, for provider prov (NULL:
 * any), bound to domain (NULL: any). Free with ixfer_fab.freeinfo. */
struct fi_info *ixfer_rdm_hints(const char *prov, const char *domain);
void ixfer_fill_provider_info(const struct fi_info *fi, ixfer_provider_info *out);
/* Why ixfer cannot work correctly over fi's provider on the loaded libfabric
 * (a known defect of released versions, with what to use instead), or NULL. */
const char *ixfer_provider_refusal(const struct fi_info *fi);

#endif
