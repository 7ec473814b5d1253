/* The one intrusive list of the shim: circular and doubly linked around a head
 * that is itself a node, so that insert and unlink are O(1) and need no
 * special case for the ends. Every queue, free list, bucket chain and registry
 * in csrc/src uses it; none writes its own links.
 *
 * A node that is on no list has NULL links (a zeroed struct is such a node),
 * and ixfer_list_remove() leaves it so: ixfer_list_linked() then says whether
 * an element is queued without a separate flag. A head must be initialized
 * (it points at itself when empty). No locking: the owner of a list holds
 * whatever lock guards it. */
#ifndef IXFER_CORE_LIST_H
#define IXFER_CORE_LIST_H

#include <stddef.h>

struct ixfer_list {
    struct ixfer_list *prev, *next;
};

#define ixfer_container_of(ptr, type, member) ((type *)(void *)((char *)(ptr) - offsetof(type, member)))
/* The element holding node (which may be NULL, giving NULL). */
#define ixfer_list_entry(node, type, member) \
    ((node) ? ixfer_container_of(node, type, member) : (type *)NULL)

static inline void ixfer_list_init(struct ixfer_list *head) { head->prev = head->next = head; }

static inline int ixfer_list_empty(const struct ixfer_list *head) { return head->next == head; }

/* Whether node is on a list (nodes start, and are left, unlinked as NULL). */
static inline int ixfer_list_linked(const struct ixfer_list *node) { return node->next != NULL; }

/* Puts node just before pos; with pos the head, that is at the back. */
static inline void ixfer_list_insert_before(struct ixfer_list *pos, struct ixfer_list *node)
{
    node->prev = pos->prev;
    node->next = pos;
    pos->prev->next = node;
    pos->prev = node;
}

static inline void ixfer_list_push_back(struct ixfer_list *head, struct ixfer_list *node)
{
    ixfer_list_insert_before(head, node);
}

static inline void ixfer_list_push_front(struct ixfer_list *head, struct ixfer_list *node)
{
    ixfer_list_insert_before(head->next, node);
}

static inline void ixfer_list_remove(struct ixfer_list *node)
{
    node->prev->next = node->next;
    node->next->prev = node->prev;
    node->prev = node->next = NULL;
}

/* First and last nodes, or NULL when the list is empty. */
static inline struct ixfer_list *ixfer_list_first(const struct ixfer_list *head)
{
    return head->next == head ? NULL : head->next;
}

static inline struct ixfer_list *ixfer_list_last(const struct ixfer_list *head)
{
    return head->prev == head ? NULL : head->prev;
}

static inline struct ixfer_list *ixfer_list_pop_front(struct ixfer_list *head)
{
    struct ixfer_list *node = ixfer_list_first(head);
    if (node)
        ixfer_list_remove(node);
    return node;
}

/* Moves every node of from to the back of to, leaving from empty: a consumer
 * takes a whole queue in one step under its lock and walks it after. */
static inline void ixfer_list_splice_back(struct ixfer_list *to, struct ixfer_list *from)
{
    if (ixfer_list_empty(from))
        return;
    from->next->prev = to->prev;
    to->prev->next = from->next;
    from->prev->next = to;
    to->prev = from->prev;
    ixfer_list_init(from);
}

/* Walks the nodes front to back (or back to front); node must stay linked
 * during the step. */
#define IXFER_LIST_FOR_EACH(node, head) \
    for (struct ixfer_list *node = (head)->next; node != (head); node = node->next)
#define IXFER_LIST_FOR_EACH_REVERSE(node, head) \
    for (struct ixfer_list *node = (head)->prev; node != (head); node = node->prev)
/* The same, where the step may unlink or free node (not the one after it). */
#define IXFER_LIST_FOR_EACH_SAFE(node, head)                                        \
    for (struct ixfer_list *node = (head)->next, *node##_next_ = node->next;       \
         node != (head); node = node##_next_, node##_next_ = node->next)

#endif
