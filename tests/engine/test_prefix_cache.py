"""webbuild.engine.prefix_cache on the page-table stand-in of the model runner: which prefix a prompt reuses and
how (taking a cached prefix over, or forking at the point where it diverges), what a finished sequence leaves
behind, and eviction least recently used first, freeing only pages no other sequence holds."""

from __future__ import annotations

from paged_runner import PagedRunner

from webbuild.engine.kv_pages import PAGE_SIZE
from webbuild.engine.prefix_cache import PrefixCache, Reuse

P = PAGE_SIZE


def cache_with(*held: list[int], pages: int = 32) -> tuple[PrefixCache, PagedRunner]:
    """A cache whose KV holds ``held`` as finished sequences 1, 2, ... (cached in that order)."""
    runner = PagedRunner(pages=pages, max_num_sequence=8, window=256)
    cache = PrefixCache(runner)
    for seq, tokens in enumerate(held, 1):
        runner.add_sequence(seq)
        runner.pages.append(seq, tokens)
        cache.keep(seq)
    return cache, runner


def test_a_prompt_extending_a_cached_prefix_takes_it_over():
    turn1 = list(range(2 * P + 5))
    cache, runner = cache_with(turn1)
    turn2 = turn1 + [90, 91, 92]
    reuse = cache.match(turn2, len(turn2) - 1)
    assert reuse == Reuse(1, len(turn1), cached=True, adopt=True)
    free = runner.available_pages()
    assert cache.start(10, reuse) == (1, len(turn1))  # runs as the cached sequence, nothing copied
    assert runner.available_pages() == free and len(cache) == 0
    assert runner.pages.live_tokens == len(turn1) and runner.pages.cached_tokens == 0
    assert cache.reused_tokens == len(turn1)


def test_a_prompt_diverging_mid_prefix_forks_there_and_the_prefix_stays():
    shared = list(range(P + 6))
    cache, runner = cache_with(shared + [1, 2, 3])
    prompt = shared + [50, 51, 52, 53]
    reuse = cache.match(prompt, len(prompt) - 1)
    assert reuse == Reuse(1, len(shared), cached=True, adopt=False)
    free = runner.available_pages()
    assert cache.start(10, reuse) == (10, len(shared))
    assert runner.available_pages() == free - 1  # the full page shared, the partial one copied
    assert runner.pages.tokens[10] == shared and runner.pages.tokens[1] == shared + [1, 2, 3]
    assert len(cache) == 1
    # The cached prefix's full page is now held by a running sequence too: only its last page is evictable.
    assert cache.evictable_pages == 1


def test_matching_leaves_what_the_limit_says_and_needs_a_page():
    cache, _ = cache_with(list(range(3 * P)))
    prompt = list(range(3 * P))
    assert cache.match(prompt, len(prompt) - 1).length == 3 * P - 1  # a fresh prompt prefills its last token
    assert cache.match(prompt, len(prompt)).adopt  # a preempted sequence may take all it had
    assert cache.match(list(range(P - 1)) + [99], P + 5) == Reuse()  # less than a page in common
    assert cache.match([7] + prompt, 3 * P) == Reuse()


def test_the_longest_match_wins_over_running_and_cached_sequences():
    base = list(range(2 * P))
    cache, runner = cache_with(base[:P] + [70] * P)
    runner.add_sequence(5)  # a running sequence holding more of the prompt
    runner.pages.append(5, base + [80])
    reuse = cache.match(base + [81, 82], 2 * P + 1)
    assert reuse == Reuse(5, 2 * P, cached=False, adopt=False)
    cache.start(10, reuse)
    assert runner.pages.tokens[10] == base and runner.pages.tokens[5] == base + [80]


def test_a_finished_sequence_replaces_the_prefixes_it_extends_and_is_dropped_when_covered():
    first = list(range(P + 3))
    cache, runner = cache_with(first)
    runner.add_sequence(2)
    runner.pages.append(2, first + [40, 41])
    cache.keep(2)  # extends the cached prefix: it replaces it
    assert sorted(runner.pages.tokens) == [2] and len(cache) == 1
    runner.add_sequence(3)
    runner.pages.append(3, first)
    cache.keep(3)  # covered by sequence 2: removed at once
    assert sorted(runner.pages.tokens) == [2]
    runner.add_sequence(4)
    runner.pages.append(4, [1] * (P - 1))
    cache.keep(4)  # shorter than a page: nothing to reuse
    assert sorted(runner.pages.tokens) == [2]


def test_eviction_is_least_recently_used_first_and_frees_only_unshared_pages():
    a, b, c = ([t] * (2 * P) for t in (1, 2, 3))
    cache, runner = cache_with(a, b, c, pages=8)
    assert runner.available_pages() == 2 and cache.evictable_pages == 6
    cache.start(10, cache.match(a[: P + 4] + [9], P + 5))  # a is used again (forked): now the most recent
    assert runner.available_pages() == 1  # the copy of its partly filled page
    assert cache.evictable_pages == 5  # a's first page is held by the fork now
    cache.reserve(3)
    assert sorted(runner.pages.tokens) == [1, 3, 10]  # b, the least recently used, went
    cache.reserve(8)  # then c, then a; the running sequence's pages stay
    assert sorted(runner.pages.tokens) == [10] and runner.available_pages() == 6
    assert not cache.evict()


def test_refcounted_pages_come_back_with_their_last_holder():
    prompt = list(range(3 * P))
    cache, runner = cache_with(prompt, pages=10)
    for child in (10, 11):  # two forks mid-prefix share two full pages with the cached prefix
        cache.start(child, cache.match(prompt[: 2 * P + 4] + [99], 2 * P + 4))
    assert runner.available_pages() == 10 - 3 - 2  # the prefix's 3 pages, one partial copy per fork
    assert cache.evictable_pages == 1  # only the prefix's third page
    runner.remove_sequence(10)
    cache.evict()
    assert runner.available_pages() == 10 - 3  # sequence 11 still holds the two shared pages and its copy
    runner.remove_sequence(11)
    assert runner.available_pages() == 10


def test_a_disabled_cache_keeps_nothing_and_matches_nothing():
    runner = PagedRunner(pages=8)
    cache = PrefixCache(runner, enabled=False)
    runner.add_sequence(1)
    runner.pages.append(1, range(3 * P))
    assert cache.match(list(range(3 * P)), 3 * P) == Reuse()
    cache.keep(1)
    assert runner.available_pages() == 8 and not runner.pages.tokens
