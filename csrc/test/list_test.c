/* Tests of core/list.h, the one list every queue of the shim uses, built
 * under AddressSanitizer and UBSan by scripts/sanitize.sh. */
#include <stdio.h>
#include <stdlib.h>

#include "core/list.h"

static int failures;

#define EXPECT(cond)                                                              \
    do {                                                                          \
        if (!(cond)) {                                                            \
            fprintf(stderr, "%s:%d: expected %s\n", __FILE__, __LINE__, #cond);   \
            failures++;                                                           \
        }                                                                         \
    } while (0)

struct item {
    int value;
    struct ixfer_list link;
};

/* Whether head holds exactly want[0..n) front to back, and back to front. */
static int holds(const struct ixfer_list *head, const int *want, int n)
{
    int i = 0;
    IXFER_LIST_FOR_EACH(node, head)
        if (i >= n || ixfer_container_of(node, struct item, link)->value != want[i++])
            return 0;
    if (i != n)
        return 0;
    IXFER_LIST_FOR_EACH_REVERSE(node, head)
        if (ixfer_container_of(node, struct item, link)->value != want[--i])
            return 0;
    return 1;
}

int main(void)
{
    struct item items[6] = {{.value = 0}, {.value = 1}, {.value = 2},
                            {.value = 3}, {.value = 4}, {.value = 5}};
    struct ixfer_list a, b;
    ixfer_list_init(&a);
    ixfer_list_init(&b);
    EXPECT(ixfer_list_empty(&a) && !ixfer_list_first(&a) && !ixfer_list_last(&a));
    EXPECT(!ixfer_list_pop_front(&a));
    EXPECT(!ixfer_list_linked(&items[0].link)); /* zeroed: on no list */

    ixfer_list_push_back(&a, &items[1].link);
    ixfer_list_push_back(&a, &items[2].link);
    ixfer_list_push_front(&a, &items[0].link);
    EXPECT(holds(&a, (int[]){0, 1, 2}, 3));
    EXPECT(ixfer_list_linked(&items[1].link));
    EXPECT(ixfer_list_entry(ixfer_list_last(&a), struct item, link) == &items[2]);

    /* Unlinking the middle, then inserting before a position (sorted insert). */
    ixfer_list_remove(&items[1].link);
    EXPECT(!ixfer_list_linked(&items[1].link));
    EXPECT(holds(&a, (int[]){0, 2}, 2));
    ixfer_list_insert_before(&items[2].link, &items[1].link);
    ixfer_list_insert_before(&a, &items[3].link); /* before the head: at the back */
    EXPECT(holds(&a, (int[]){0, 1, 2, 3}, 4));

    /* Splicing a whole list onto another empties the source. */
    ixfer_list_push_back(&b, &items[4].link);
    ixfer_list_push_back(&b, &items[5].link);
    ixfer_list_splice_back(&a, &b);
    EXPECT(ixfer_list_empty(&b));
    EXPECT(holds(&a, (int[]){0, 1, 2, 3, 4, 5}, 6));
    ixfer_list_splice_back(&a, &b); /* an empty source changes nothing */
    EXPECT(holds(&a, (int[]){0, 1, 2, 3, 4, 5}, 6));
    ixfer_list_splice_back(&b, &a);
    EXPECT(ixfer_list_empty(&a) && holds(&b, (int[]){0, 1, 2, 3, 4, 5}, 6));

    /* The safe walk may unlink (or free) the node it stands on. */
    IXFER_LIST_FOR_EACH_SAFE(node, &b)
        if (ixfer_container_of(node, struct item, link)->value % 2)
            ixfer_list_remove(node);
    EXPECT(holds(&b, (int[]){0, 2, 4}, 3));
    struct ixfer_list *first = ixfer_list_pop_front(&b);
    EXPECT(first == &items[0].link && !ixfer_list_linked(first));

    /* Teardown: free every element while walking (ASan sees a read of a freed
     * node), then reset the head. */
    struct ixfer_list owned;
    ixfer_list_init(&owned);
    for (int i = 0; i < 4; i++) {
        struct item *it = malloc(sizeof *it);
        it->value = i;
        ixfer_list_push_back(&owned, &it->link);
    }
    int freed = 0;
    IXFER_LIST_FOR_EACH_SAFE(node, &owned) {
        free(ixfer_container_of(node, struct item, link));
        freed++;
    }
    ixfer_list_init(&owned);
    EXPECT(freed == 4 && ixfer_list_empty(&owned));

    if (failures) {
        fprintf(stderr, "list_test: %d failure(s)\n", failures);
        return 1;
    }
    printf("list_test: all checks passed\n");
    return 0;
}
