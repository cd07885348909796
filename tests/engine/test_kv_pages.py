"""webbuild.engine.kv_pages: the page table follows TVM's paged KV cache rules (whole pages shared by a fork, the
partly filled one copied, a page freed with its last holder) and counts live and cached tokens apart."""

from __future__ import annotations

from webbuild.engine.kv_pages import PAGE_SIZE, PageTable


def test_a_fork_shares_whole_pages_and_copies_the_partly_filled_one():
    table = PageTable()
    table.add(1)
    table.append(1, range(PAGE_SIZE + 4))  # one full page and 4 tokens of the next
    assert (table.pages_in_use, table.live_tokens) == (2, PAGE_SIZE + 4)
    table.fork(1, 2, PAGE_SIZE + 3)
    assert table.tokens[2] == list(range(PAGE_SIZE + 3))
    assert table.pages_in_use == 3  # the full page is shared, the partial one copied
    assert table.live_tokens == PAGE_SIZE + 4 + 3
    table.fork(1, 3, PAGE_SIZE)  # at a page boundary: nothing is copied
    assert table.pages_in_use == 3 and table.length(3) == PAGE_SIZE
    table.append(3, [7])  # and its next token starts a page of its own
    assert table.pages_in_use == 4
    table.remove(1)
    assert table.pages_in_use == 3  # its partial page went; the shared one stays for 2 and 3
    table.remove(2)
    table.remove(3)
    assert (table.pages_in_use, table.live_tokens, table.tokens) == (0, 0, {})


def test_cached_sequences_count_apart_and_shared_pages_stay_live():
    table = PageTable()
    table.add(1)
    table.append(1, range(2 * PAGE_SIZE + 1))
    table.fork(1, 2, 2 * PAGE_SIZE)
    table.set_cached(1, True)
    # Both full pages are held by the live fork too: only the cached sequence's last page is evictable.
    assert (table.cached_pages, table.cached_tokens) == (1, 1)
    assert table.live_tokens == 2 * PAGE_SIZE
    table.remove(2)
    assert (table.cached_pages, table.cached_tokens, table.live_tokens) == (3, 2 * PAGE_SIZE + 1, 0)
    table.set_cached(1, False)
    assert (table.cached_pages, table.live_tokens, table.pages_in_use) == (0, 2 * PAGE_SIZE + 1, 3)
