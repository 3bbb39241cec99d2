"""Ordinary, harmless Python in the sandbox: HumanEval-style functions (typing imports, math,
collections, itertools, string formatting, classes, sets, bytes, big ints, ...) run in the
sandbox and in plain Python in this process, and must give the same status, value and printed
text. All run in one batch (one worker, plus one for the determinism check).
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
import textwrap
from typing import Any

from tina.data.sandbox import Call, SandboxConfig, Verdict, run_batch, validate_program

CONFIG = SandboxConfig(timeout_s=120.0, cpu_s=5, memory_mb=512, max_output_bytes=65_536)


def case(entry: str, source: str, *args: Any) -> tuple[str, str, tuple[Any, ...]]:
    return entry, textwrap.dedent(source).strip() + "\n", args


PROGRAMS: list[tuple[str, str, tuple[Any, ...]]] = [
    case(
        "has_close_elements",
        """
        from typing import List


        def has_close_elements(numbers: List[float], threshold: float) -> bool:
            for i, a in enumerate(numbers):
                for j, b in enumerate(numbers):
                    if i != j and abs(a - b) < threshold:
                        return True
            return False
        """,
        [1.0, 2.8, 3.0, 4.0, 5.0, 2.0],
        0.3,
    ),
    case(
        "separate_paren_groups",
        """
        from typing import List


        def separate_paren_groups(paren_string: str) -> List[str]:
            result, current, depth = [], [], 0
            for c in paren_string:
                if c == '(':
                    depth += 1
                    current.append(c)
                elif c == ')':
                    depth -= 1
                    current.append(c)
                    if depth == 0:
                        result.append(''.join(current))
                        current.clear()
            return result
        """,
        "( ) (( )) (( )( ))",
    ),
    case(
        "truncate_number",
        """
        import math


        def truncate_number(number: float) -> float:
            return number - math.floor(number)
        """,
        3.5,
    ),
    case(
        "below_zero",
        """
        from typing import List


        def below_zero(operations: List[int]) -> bool:
            balance = 0
            for op in operations:
                balance += op
                if balance < 0:
                    return True
            return False
        """,
        [1, 2, -4, 5],
    ),
    case(
        "mean_absolute_deviation",
        """
        from typing import List
        import statistics


        def mean_absolute_deviation(numbers: List[float]) -> float:
            mean = statistics.mean(numbers)
            return sum(abs(x - mean) for x in numbers) / len(numbers)
        """,
        [1.0, 2.0, 3.0, 4.0],
    ),
    case(
        "intersperse",
        """
        from typing import List


        def intersperse(numbers: List[int], delimeter: int) -> List[int]:
            out = []
            for n in numbers:
                out += [n, delimeter]
            return out[:-1]
        """,
        [1, 2, 3],
        4,
    ),
    case(
        "parse_nested_parens",
        """
        from typing import List


        def parse_nested_parens(paren_string: str) -> List[int]:
            def depth(s):
                d = m = 0
                for c in s:
                    d += 1 if c == '(' else -1
                    m = max(m, d)
                return m
            return [depth(x) for x in paren_string.split() if x]
        """,
        "(()()) ((())) () ((())()())",
    ),
    case(
        "filter_by_substring",
        """
        from typing import List


        def filter_by_substring(strings: List[str], substring: str) -> List[str]:
            return [s for s in strings if substring in s]
        """,
        ["abc", "bacd", "cde", "array"],
        "a",
    ),
    case(
        "sum_product",
        """
        from typing import List, Tuple
        from functools import reduce
        import operator


        def sum_product(numbers: List[int]) -> Tuple[int, int]:
            return sum(numbers), reduce(operator.mul, numbers, 1)
        """,
        [1, 2, 3, 4],
    ),
    case(
        "rolling_max",
        """
        from typing import List
        from itertools import accumulate


        def rolling_max(numbers: List[int]) -> List[int]:
            return list(accumulate(numbers, max))
        """,
        [1, 2, 3, 2, 3, 4, 2],
    ),
    case(
        "make_palindrome",
        """
        def is_palindrome(string: str) -> bool:
            return string == string[::-1]


        def make_palindrome(string: str) -> str:
            for i in range(len(string) + 1):
                if is_palindrome(string[i:]):
                    return string + string[:i][::-1]
            return string
        """,
        "cata",
    ),
    case(
        "string_xor",
        """
        def string_xor(a: str, b: str) -> str:
            return ''.join('0' if x == y else '1' for x, y in zip(a, b))
        """,
        "010",
        "110",
    ),
    case(
        "longest",
        """
        from typing import List, Optional


        def longest(strings: List[str]) -> Optional[str]:
            if not strings:
                return None
            return max(strings, key=len)
        """,
        ["a", "bb", "ccc", "dd"],
    ),
    case(
        "greatest_common_divisor",
        """
        import math


        def greatest_common_divisor(a: int, b: int) -> int:
            return math.gcd(a, b)
        """,
        25,
        15,
    ),
    case(
        "all_prefixes",
        """
        from typing import List


        def all_prefixes(string: str) -> List[str]:
            return [string[: i + 1] for i in range(len(string))]
        """,
        "abc",
    ),
    case(
        "string_sequence",
        """
        def string_sequence(n: int) -> str:
            return ' '.join(str(i) for i in range(n + 1))
        """,
        5,
    ),
    case(
        "count_distinct_characters",
        """
        def count_distinct_characters(string: str) -> int:
            return len(set(string.lower()))
        """,
        "xyzXYZabc",
    ),
    case(
        "parse_music",
        """
        from typing import List


        def parse_music(music_string: str) -> List[int]:
            notes = {'o': 4, 'o|': 2, '.|': 1}
            return [notes[x] for x in music_string.split(' ') if x]
        """,
        "o o| .| o| o| .| .| .| .| o o",
    ),
    case(
        "how_many_times",
        """
        def how_many_times(string: str, substring: str) -> int:
            return sum(
                1 for i in range(len(string) - len(substring) + 1)
                if string[i:i + len(substring)] == substring
            )
        """,
        "aaaa",
        "aa",
    ),
    case(
        "sort_numbers",
        """
        def sort_numbers(numbers: str) -> str:
            names = ['zero', 'one', 'two', 'three', 'four', 'five', 'six', 'seven', 'eight', 'nine']
            value = {name: i for i, name in enumerate(names)}
            return ' '.join(sorted(numbers.split(), key=lambda w: value[w]))
        """,
        "three one five",
    ),
    case(
        "find_closest_elements",
        """
        from typing import List, Tuple
        from itertools import combinations


        def find_closest_elements(numbers: List[float]) -> Tuple[float, float]:
            pair = min(combinations(sorted(numbers), 2), key=lambda p: p[1] - p[0])
            return pair
        """,
        [1.0, 2.0, 3.9, 4.0, 5.0, 2.2],
    ),
    case(
        "rescale_to_unit",
        """
        from typing import List


        def rescale_to_unit(numbers: List[float]) -> List[float]:
            lo, hi = min(numbers), max(numbers)
            return [(x - lo) / (hi - lo) for x in numbers]
        """,
        [1.0, 2.0, 3.0, 4.0, 5.0],
    ),
    case(
        "filter_integers",
        """
        from typing import Any, List


        def filter_integers(values: List[Any]) -> List[int]:
            return [x for x in values if isinstance(x, int) and not isinstance(x, bool)]
        """,
        ["a", 3.14, 5, True, {}, [], 9],
    ),
    case(
        "largest_divisor",
        """
        def largest_divisor(n: int) -> int:
            return max(d for d in range(1, n) if n % d == 0)
        """,
        15,
    ),
    case(
        "factorize",
        """
        from typing import List
        import math


        def factorize(n: int) -> List[int]:
            out, d = [], 2
            while d <= math.isqrt(n):
                while n % d == 0:
                    out.append(d)
                    n //= d
                d += 1
            if n > 1:
                out.append(n)
            return out
        """,
        2 * 2 * 3 * 97 * 1009,
    ),
    case(
        "remove_duplicates",
        """
        from typing import List
        import collections


        def remove_duplicates(numbers: List[int]) -> List[int]:
            c = collections.Counter(numbers)
            return [n for n in numbers if c[n] <= 1]
        """,
        [1, 2, 3, 2, 4],
    ),
    case(
        "flip_case",
        """
        def flip_case(string: str) -> str:
            return string.swapcase()
        """,
        "Hello",
    ),
    case(
        "concatenate",
        """
        from typing import List


        def concatenate(strings: List[str]) -> str:
            return ''.join(strings)
        """,
        ["x", "y", "z"],
    ),
    case(
        "is_prime",
        """
        import math


        def is_prime(n):
            if n < 2:
                return False
            return all(n % k for k in range(2, math.isqrt(n) + 1))
        """,
        13441,
    ),
    case(
        "find_zero",
        """
        import math


        def poly(xs: list, x: float):
            return sum(coeff * math.pow(x, i) for i, coeff in enumerate(xs))


        def find_zero(xs: list):
            lo, hi = -1.0, 1.0
            while poly(xs, lo) * poly(xs, hi) > 0:
                lo, hi = lo * 2.0, hi * 2.0
            while hi - lo > 1e-10:
                mid = (lo + hi) / 2.0
                if poly(xs, mid) * poly(xs, lo) > 0:
                    lo = mid
                else:
                    hi = mid
            return round(lo, 6)
        """,
        [-6, 11, -6, 1],
    ),
    case(
        "sort_third",
        """
        def sort_third(l: list):
            l = list(l)
            l[::3] = sorted(l[::3])
            return l
        """,
        [5, 6, 3, 4, 8, 9, 2],
    ),
    case(
        "unique",
        """
        def unique(l: list):
            return sorted(set(l))
        """,
        [5, 3, 5, 2, 3, 3, 9, 0, 123],
    ),
    case(
        "fizz_buzz",
        """
        def fizz_buzz(n: int):
            return sum(str(i).count('7') for i in range(n) if i % 11 == 0 or i % 13 == 0)
        """,
        79,
    ),
    case(
        "decode_cyclic",
        """
        def encode_cyclic(s: str):
            groups = [s[(3 * i):min((3 * i + 3), len(s))] for i in range((len(s) + 2) // 3)]
            groups = [(g[1:] + g[0]) if len(g) == 3 else g for g in groups]
            return ''.join(groups)


        def decode_cyclic(s: str):
            return encode_cyclic(encode_cyclic(s))
        """,
        "abcdefghij",
    ),
    case(
        "prime_fib",
        """
        def prime_fib(n: int):
            def is_prime(p):
                return p > 1 and all(p % k for k in range(2, int(p ** 0.5) + 1))
            a, b = 0, 1
            while True:
                a, b = b, a + b
                if is_prime(a):
                    n -= 1
                    if n == 0:
                        return a
        """,
        7,
    ),
    case(
        "triples_sum_to_zero",
        """
        import itertools


        def triples_sum_to_zero(l: list):
            return any(sum(t) == 0 for t in itertools.combinations(l, 3))
        """,
        [2, 4, -5, 3, 9, 7],
    ),
    case(
        "change_base",
        """
        def change_base(x: int, base: int):
            digits = ''
            while x > 0:
                digits = str(x % base) + digits
                x //= base
            return digits or '0'
        """,
        8,
        3,
    ),
    case(
        "median",
        """
        import statistics


        def median(l: list):
            return statistics.median(l)
        """,
        [-10, 4, 6, 1000, 10, 20],
    ),
    case(
        "modp",
        """
        def modp(n: int, p: int):
            return pow(2, n, p)
        """,
        1101,
        101,
    ),
    case(
        "remove_vowels",
        """
        def remove_vowels(text):
            return ''.join(c for c in text if c.lower() not in 'aeiou')
        """,
        "abcdef\nghijklm",
    ),
    case(
        "same_chars",
        """
        def same_chars(s0: str, s1: str):
            return set(s0) == set(s1)
        """,
        "eabcdzzzz",
        "dddzzzzzzzddeddabc",
    ),
    case(
        "common",
        """
        def common(l1: list, l2: list):
            return sorted(set(l1) & set(l2))
        """,
        [1, 4, 3, 34, 653, 2, 5],
        [5, 7, 1, 5, 9, 653, 121],
    ),
    case(
        "derivative",
        """
        def derivative(xs: list):
            return [i * x for i, x in enumerate(xs)][1:]
        """,
        [3, 1, 2, 4, 5],
    ),
    case(
        "fibfib",
        """
        import functools


        @functools.lru_cache(maxsize=None)
        def fibfib(n: int):
            if n < 3:
                return [0, 0, 1][n]
            return fibfib(n - 1) + fibfib(n - 2) + fibfib(n - 3)
        """,
        40,
    ),
    case(
        "circular_shift",
        """
        def circular_shift(x, shift):
            s = str(x)
            if shift > len(s):
                return s[::-1]
            return s[len(s) - shift:] + s[:len(s) - shift]
        """,
        12345,
        2,
    ),
    case(
        "digit_sum",
        """
        import string


        def digit_sum(s):
            return sum(ord(c) for c in s if c in string.ascii_uppercase)
        """,
        "woArBld",
    ),
    case(
        "search",
        """
        from collections import Counter


        def search(lst):
            freq = Counter(lst)
            good = [k for k, v in freq.items() if v >= k]
            return max(good) if good else -1
        """,
        [4, 1, 2, 2, 3, 1],
    ),
    case(
        "strange_sort_list",
        """
        from collections import deque


        def strange_sort_list(lst):
            d = deque(sorted(lst))
            out, left = [], True
            while d:
                out.append(d.popleft() if left else d.pop())
                left = not left
            return out
        """,
        [5, 1, 4, 2, 3],
    ),
    case(
        "triangle_area",
        """
        import math


        def triangle_area(a, b, c):
            if a + b <= c or a + c <= b or b + c <= a:
                return -1
            s = (a + b + c) / 2
            return round(math.sqrt(s * (s - a) * (s - b) * (s - c)), 2)
        """,
        3,
        4,
        5,
    ),
    case(
        "smallest_change",
        """
        def smallest_change(arr):
            return sum(1 for i in range(len(arr) // 2) if arr[i] != arr[-1 - i])
        """,
        [1, 2, 3, 5, 4, 7, 9, 6],
    ),
    case(
        "is_simple_power",
        """
        def is_simple_power(x, n):
            if n == 1:
                return x == 1
            p = 1
            while p < x:
                p *= n
            return p == x
        """,
        81,
        3,
    ),
    case(
        "hex_key",
        """
        def hex_key(num):
            return sum(1 for c in num if c in {'2', '3', '5', '7', 'B', 'D'})
        """,
        "ABED1A33",
    ),
    case(
        "decimal_to_binary",
        """
        def decimal_to_binary(decimal):
            return 'db' + bin(decimal)[2:] + 'db'
        """,
        32,
    ),
    case(
        "is_happy",
        """
        def is_happy(s):
            return len(s) >= 3 and all(len(set(s[i:i + 3])) == 3 for i in range(len(s) - 2))
        """,
        "adbc",
    ),
    case(
        "prime_length",
        """
        def prime_length(string):
            n = len(string)
            return n > 1 and all(n % k for k in range(2, n))
        """,
        "kittens",
    ),
    case(
        "anti_shuffle",
        """
        def anti_shuffle(s):
            return ' '.join(''.join(sorted(w)) for w in s.split(' '))
        """,
        "Hello World!!!",
    ),
    case(
        "get_row",
        """
        def get_row(lst, x):
            coords = [(i, j) for i, row in enumerate(lst) for j, v in enumerate(row) if v == x]
            return sorted(sorted(coords, key=lambda c: -c[1]), key=lambda c: c[0])
        """,
        [[1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 1, 6], [1, 2, 3, 4, 5, 1]],
        1,
    ),
    case(
        "encrypt",
        """
        import string


        def encrypt(s):
            letters = string.ascii_lowercase
            table = str.maketrans(letters, letters[4:] + letters[:4])
            return s.translate(table)
        """,
        "gf",
    ),
    case(
        "next_smallest",
        """
        import heapq


        def next_smallest(lst):
            values = sorted(set(lst))
            return heapq.nsmallest(2, values)[1] if len(values) > 1 else None
        """,
        [5, 1, 4, 3, 2],
    ),
    case(
        "is_bored",
        """
        import re


        def is_bored(S):
            sentences = re.split(r'[.?!]\\s*', S)
            return sum(1 for s in sentences if s[:2] == 'I ')
        """,
        "The sky is blue. I love this weather. I am bored!",
    ),
    case(
        "skjkasdkd",
        """
        def skjkasdkd(lst):
            def is_prime(n):
                return n > 1 and all(n % k for k in range(2, int(n ** 0.5) + 1))
            best = max((x for x in lst if is_prime(x)), default=0)
            return sum(int(d) for d in str(best))
        """,
        [0, 3, 2, 1, 3, 5, 7, 4, 5, 5, 5, 2, 181, 32, 4, 32, 3, 2, 32, 324, 4, 3],
    ),
    case(
        "closest_integer",
        """
        from decimal import Decimal, ROUND_HALF_UP


        def closest_integer(value):
            return int(Decimal(value).quantize(Decimal('1'), rounding=ROUND_HALF_UP))
        """,
        "-14.5",
    ),
    case(
        "words_string",
        """
        import re


        def words_string(s):
            return [w for w in re.split(r'[,\\s]+', s) if w]
        """,
        "One, two, three, four, five, six",
    ),
    case(
        "rounded_avg",
        """
        def rounded_avg(n, m):
            if m < n:
                return -1
            return bin(round((n + m) / 2))
        """,
        10,
        20,
    ),
    case(
        "by_length",
        """
        def by_length(arr):
            names = {1: 'One', 2: 'Two', 3: 'Three', 4: 'Four', 5: 'Five', 6: 'Six',
                     7: 'Seven', 8: 'Eight', 9: 'Nine'}
            return [names[x] for x in sorted(arr, reverse=True) if x in names]
        """,
        [2, 1, 1, 4, 5, 8, 2, 3],
    ),
    case(
        "even_odd_palindrome",
        """
        def even_odd_palindrome(n):
            pals = [i for i in range(1, n + 1) if str(i) == str(i)[::-1]]
            even = sum(1 for p in pals if p % 2 == 0)
            return even, len(pals) - even
        """,
        123,
    ),
    case(
        "histogram",
        """
        from collections import Counter


        def histogram(test):
            counts = Counter(test.split())
            if not counts:
                return {}
            top = max(counts.values())
            return {k: v for k, v in counts.items() if v == top}
        """,
        "a b b a c",
    ),
    case(
        "odd_count",
        """
        def odd_count(lst):
            out = []
            for s in lst:
                n = sum(int(d) % 2 for d in s)
                text = 'the number of odd elements {}n the str{}ng {} of the {}nput.'
                out.append(text.format(n, n, n, n))
            return out
        """,
        ["1234567", "3", "11111111"],
    ),
    case(
        "max_fill",
        """
        import math


        def max_fill(grid, capacity):
            return sum(math.ceil(sum(row) / capacity) for row in grid)
        """,
        [[0, 0, 1, 1], [0, 0, 0, 0], [1, 1, 1, 1], [0, 1, 1, 1]],
        2,
    ),
    case(
        "select_words",
        """
        def select_words(s, n):
            vowels = set('aeiouAEIOU')
            def consonants(w):
                return sum(1 for c in w if c.isalpha() and c not in vowels)
            return [w for w in s.split() if consonants(w) == n]
        """,
        "Mary had a little lamb",
        4,
    ),
    case(
        "get_odd_collatz",
        """
        def get_odd_collatz(n):
            odds = set()
            while n != 1:
                if n % 2:
                    odds.add(n)
                n = n // 2 if n % 2 == 0 else 3 * n + 1
            odds.add(1)
            return sorted(odds)
        """,
        27,
    ),
    case(
        "tri_set",
        """
        from typing import Set


        def tri_set(n: int) -> Set[int]:
            return {i * (i + 1) // 2 for i in range(n)}
        """,
        12,
    ),
    case(
        "letters_frozen",
        """
        from typing import FrozenSet


        def letters_frozen(words) -> FrozenSet[str]:
            return frozenset(c for w in words for c in w)
        """,
        ["hello", "world"],
    ),
    case(
        "word_sets",
        """
        def word_sets(text):
            return {w: set(w) for w in text.split()}
        """,
        "apple banana cherry",
    ),
    case(
        "big_factorial",
        """
        import math


        def big_factorial(n):
            return math.factorial(n)
        """,
        200,
    ),
    case(
        "huge_power",
        """
        def huge_power(n):
            return 3 ** n
        """,
        8000,
    ),
    case(
        "encode_hex",
        """
        def encode_hex(s):
            data = s.encode()
            return data, data.hex(), bytes.fromhex(data.hex()).decode()
        """,
        "héllo",
    ),
    case(
        "sha_digest",
        """
        import hashlib


        def sha_digest(s):
            return hashlib.sha256(s.encode('utf-8')).hexdigest()[:16], hashlib.md5(b'x').digest()
        """,
        "abc",
    ),
    case(
        "special_floats",
        """
        import math


        def special_floats(x):
            return [math.inf, -math.inf, x / 3, float('nan'), math.nan, 1e308 * 10]
        """,
        1.0,
    ),
    case(
        "format_styles",
        """
        def format_styles(n, x):
            return ['{} items'.format(n), '{0:>5}|{1:.2f}'.format(n, x),
                    '{n}-{x:05.1f}'.format(n=n, x=x), '%d/%s' % (n, x), f'{n:04d}',
                    format(x, '.3e'), '{0:{1}}'.format(n, 6)]
        """,
        42,
        3.14159,
    ),
    case(
        "local_names",
        """
        def local_names(time, code, input):
            id = time + code
            type = 'kind'
            return id * input, type
        """,
        1,
        2,
        3,
    ),
    case(
        "main_guard",
        """
        def main_guard(n):
            return n * 2


        if __name__ == "__main__":
            print(main_guard(21))
        """,
        5,
    ),
    case(
        "point_class",
        """
        class Point:
            def __init__(self, x, y):
                self.x = x
                self.y = y

            def __eq__(self, other):
                return (self.x, self.y) == (other.x, other.y)

            def __hash__(self):
                return hash((self.x, self.y))

            def __repr__(self):
                return 'Point({}, {})'.format(self.x, self.y)

            def norm2(self):
                return self.x * self.x + self.y * self.y


        def point_class(pairs):
            points = [Point(x, y) for x, y in pairs]
            return len(set(points)), repr(points[0]), max(p.norm2() for p in points)
        """,
        [(1, 2), (1, 2), (3, 4)],
    ),
    case(
        "stack_class",
        """
        from typing import List


        class Stack:
            def __init__(self):
                self.items: List[int] = []

            def push(self, x):
                self.items.append(x)

            def pop(self):
                return self.items.pop()

            def __len__(self):
                return len(self.items)

            def __iter__(self):
                return iter(reversed(self.items))


        def stack_class(ops):
            s = Stack()
            for op in ops:
                if op == 'p':
                    s.pop()
                else:
                    s.push(op)
            return len(s), list(s)
        """,
        [1, 2, "p", 3, 4],
    ),
    case(
        "ordering_class",
        """
        from functools import total_ordering


        @total_ordering
        class Version:
            def __init__(self, text):
                self.parts = tuple(int(p) for p in text.split('.'))

            def __eq__(self, other):
                return self.parts == other.parts

            def __lt__(self, other):
                return self.parts < other.parts

            def __str__(self):
                return '.'.join(str(p) for p in self.parts)


        def ordering_class(versions):
            ordered = [str(v) for v in sorted(Version(t) for t in versions)]
            return ordered, Version('1.2') >= Version('1.1')
        """,
        ["1.10", "1.2", "0.9.1"],
    ),
    case(
        "exception_class",
        """
        class ParseError(ValueError):
            def __init__(self, where):
                super().__init__('bad input at {}'.format(where))
                self.where = where


        def exception_class(s):
            try:
                for i, c in enumerate(s):
                    if not c.isdigit():
                        raise ParseError(i)
                return int(s)
            except ParseError as e:
                return e.where, str(e)
        """,
        "12a4",
    ),
    case(
        "dataclass_like",
        """
        from typing import NamedTuple


        class Item(NamedTuple):
            name: str
            price: float


        def dataclass_like(rows):
            items = [Item(n, p) for n, p in rows]
            cheapest = min(items, key=lambda i: i.price)
            return cheapest.name, tuple(cheapest), sum(i.price for i in items)
        """,
        [("a", 3.0), ("b", 1.5), ("c", 2.25)],
    ),
    case(
        "namedtuple_points",
        """
        from collections import namedtuple

        P = namedtuple('P', 'x y')


        def namedtuple_points(n):
            ps = [P(i, i * i) for i in range(n)]
            return [p.x + p.y for p in ps], tuple(ps[-1])
        """,
        5,
    ),
    case(
        "defaultdict_groups",
        """
        from collections import defaultdict


        def defaultdict_groups(words):
            groups = defaultdict(list)
            for w in words:
                groups[len(w)].append(w)
            return dict(groups)
        """,
        ["a", "bb", "cc", "ddd", "e"],
    ),
    case(
        "ordered_moves",
        """
        from collections import OrderedDict


        def ordered_moves(keys):
            d = OrderedDict.fromkeys(keys, 0)
            d.move_to_end(keys[0])
            return list(d.items())
        """,
        ["x", "y", "z"],
    ),
    case(
        "permutations_count",
        """
        import itertools


        def permutations_count(s):
            perms = {''.join(p) for p in itertools.permutations(s)}
            return len(perms), sorted(perms)[:3]
        """,
        "aabc",
    ),
    case(
        "product_grid",
        """
        from itertools import product, chain, groupby


        def product_grid(n):
            cells = list(product(range(n), repeat=2))
            runs = [(k, len(list(g))) for k, g in groupby(sorted(chain.from_iterable(cells)))]
            return len(cells), runs
        """,
        3,
    ),
    case(
        "heap_merge",
        """
        import heapq


        def heap_merge(lists):
            h = []
            for x in heapq.merge(*lists):
                heapq.heappush(h, -x)
            return [-heapq.heappop(h) for _ in range(3)]
        """,
        [[1, 4, 9], [2, 3, 10], [0, 8]],
    ),
    case(
        "bisect_insert",
        """
        import bisect


        def bisect_insert(xs, ys):
            xs = sorted(xs)
            for y in ys:
                bisect.insort(xs, y)
            return xs, bisect.bisect_left(xs, 5)
        """,
        [1, 3, 7],
        [5, 2, 8],
    ),
    case(
        "fraction_sum",
        """
        from fractions import Fraction


        def fraction_sum(n):
            s = sum(Fraction(1, k) for k in range(1, n + 1))
            return s.numerator, s.denominator, str(s.limit_denominator(100))
        """,
        10,
    ),
    case(
        "decimal_money",
        """
        import decimal


        def decimal_money(amounts):
            decimal.getcontext().prec = 10
            total = sum(decimal.Decimal(a) for a in amounts)
            seventh = decimal.Decimal(1) / decimal.Decimal(7)
            return str(total.quantize(decimal.Decimal('0.01'))), str(seventh)
        """,
        ["1.10", "2.20", "3.333"],
    ),
    case(
        "stats_summary",
        """
        import statistics


        def stats_summary(xs):
            return (statistics.mean(xs), statistics.median_low(xs), statistics.mode(xs),
                    round(statistics.pstdev(xs), 6), statistics.multimode(xs))
        """,
        [1, 2, 2, 3, 4, 7, 9],
    ),
    case(
        "seeded_random",
        """
        import random


        def seeded_random(n):
            random.seed(n)
            xs = list(range(10))
            random.shuffle(xs)
            r = random.Random(7)
            return xs, r.randint(1, 100), round(random.random(), 12), random.choice('abc')
        """,
        1234,
    ),
    case(
        "complex_roots",
        """
        import cmath


        def complex_roots(a, b, c):
            d = cmath.sqrt(b * b - 4 * a * c)
            r1, r2 = (-b + d) / (2 * a), (-b - d) / (2 * a)
            return (round(r1.real, 6), round(r1.imag, 6)), (round(r2.real, 6), round(r2.imag, 6))
        """,
        1,
        2,
        5,
    ),
    case(
        "regex_tools",
        """
        import re


        def regex_tools(text):
            pattern = re.compile(r'(\\w+)@(\\w+)\\.com', re.IGNORECASE)
            found = pattern.findall(text)
            first = pattern.search(text)
            return found, first.group(1), first.span(), re.sub(r'\\d+', '#', 'a1b22c333')
        """,
        "mail bob@example.com and ALICE@Test.COM now",
    ),
    case(
        "generator_pipeline",
        """
        from typing import Iterator


        def evens(n) -> Iterator[int]:
            for i in range(n):
                if i % 2 == 0:
                    yield i


        def generator_pipeline(n):
            g = (x * x for x in evens(n))
            return sum(g), list(evens(7))
        """,
        10,
    ),
    case(
        "closures_and_lambdas",
        """
        from typing import Callable


        def make_adder(k: int) -> Callable[[int], int]:
            return lambda x: x + k


        def closures_and_lambdas(xs):
            adders = [make_adder(k) for k in range(3)]
            return [[a(x) for a in adders] for x in xs]
        """,
        [10, 20],
    ),
    case(
        "printing",
        """
        def printing(n):
            for i in range(n):
                print('row', i, sep=':', end=';')
            print()
            print('{:>4}'.format(n))
            return n
        """,
        3,
    ),
    case(
        "nested_structures",
        """
        from typing import Dict, List, Tuple


        def nested_structures(n) -> Dict[str, List[Tuple[int, ...]]]:
            return {'squares': [(i, i * i) for i in range(n)], 'empty': [()], 'one': [(n,)]}
        """,
        4,
    ),
    case(
        "tuple_sets",
        """
        def tuple_sets(edges):
            seen = set()
            for a, b in edges:
                seen.add((min(a, b), max(a, b)))
            return seen, frozenset(x for e in seen for x in e)
        """,
        [(1, 2), (2, 1), (3, 4)],
    ),
    case(
        "string_sets",
        """
        def string_sets(words):
            return set(words), {w[0] for w in words}
        """,
        ["pear", "apple", "plum", "fig", "kiwi"],
    ),
    case(
        "bytes_ops",
        """
        def bytes_ops(s):
            b = s.encode('utf-8')
            return b[::-1], list(b[:3]), bytes(range(5)), b.upper(), b.split(b' ')
        """,
        "ab cd",
    ),
    case(
        "string_methods",
        """
        import string


        def string_methods(s):
            return (s.title(), s.center(15, '*'), s.zfill(12), string.capwords(s),
                    s.partition(' '), s.rsplit(' ', 1), s.startswith(('x', 'h')))
        """,
        "hello big world",
    ),
    case(
        "matrix_ops",
        """
        from typing import List

        Matrix = List[List[int]]


        def matmul(a: Matrix, b: Matrix) -> Matrix:
            return [[sum(x * y for x, y in zip(row, col)) for col in zip(*b)] for row in a]


        def matrix_ops(a, b):
            return matmul(a, b), [list(r) for r in zip(*a)]
        """,
        [[1, 2], [3, 4]],
        [[5, 6], [7, 8]],
    ),
    case(
        "memo_dict",
        """
        from functools import cache


        @cache
        def ways(n):
            return 1 if n <= 1 else ways(n - 1) + ways(n - 2)


        def memo_dict(n):
            return ways(n)
        """,
        90,
    ),
    case(
        "operator_sorting",
        """
        from operator import itemgetter, add


        def operator_sorting(rows):
            return sorted(rows, key=itemgetter(1, 0)), list(map(add, [1, 2], [3, 4]))
        """,
        [("b", 2), ("a", 2), ("c", 1)],
    ),
    case(
        "zip_longest_fill",
        """
        from itertools import zip_longest, islice, count, cycle


        def zip_longest_fill(a, b):
            return (list(zip_longest(a, b, fillvalue='-')), list(islice(count(5, 3), 4)),
                    list(islice(cycle('ab'), 5)))
        """,
        [1, 2, 3],
        "xy",
    ),
    case(
        "chainmap_lookup",
        """
        from collections import ChainMap


        def chainmap_lookup(a, b):
            cm = ChainMap(a, b)
            return cm['x'], cm['y'], sorted(cm.keys())
        """,
        {"x": 1},
        {"x": 2, "y": 3},
    ),
    case(
        "properties",
        """
        class Temperature:
            def __init__(self, celsius):
                self.celsius = celsius

            @property
            def fahrenheit(self):
                return self.celsius * 9 / 5 + 32

            @staticmethod
            def freezing():
                return 0

            @classmethod
            def boiling(cls):
                return cls(100)


        def properties(c):
            t = Temperature(c)
            return t.fahrenheit, Temperature.freezing(), Temperature.boiling().fahrenheit
        """,
        37,
    ),
    case(
        "inheritance",
        """
        class Shape:
            def area(self):
                raise NotImplementedError

            def describe(self):
                return '{} with area {:.2f}'.format(self.name(), self.area())


        class Square(Shape):
            def __init__(self, s):
                self.s = s

            def name(self):
                return 'square'

            def area(self):
                return self.s ** 2


        class Circle(Shape):
            def __init__(self, r):
                self.r = r

            def name(self):
                return 'circle'

            def area(self):
                return 3.14159 * self.r ** 2


        def inheritance(n):
            shapes = [Square(n), Circle(n)]
            return [s.describe() for s in shapes], isinstance(shapes[0], Shape)
        """,
        2,
    ),
    case(
        "operator_overloading",
        """
        class Vec:
            def __init__(self, *xs):
                self.xs = xs

            def __add__(self, other):
                return Vec(*(a + b for a, b in zip(self.xs, other.xs)))

            def __mul__(self, k):
                return Vec(*(a * k for a in self.xs))

            def __getitem__(self, i):
                return self.xs[i]

            def __contains__(self, x):
                return x in self.xs


        def operator_overloading(a, b):
            v = (Vec(*a) + Vec(*b)) * 2
            return v[0], list(v.xs), 6 in v
        """,
        [1, 2],
        [2, 3],
    ),
    case(
        "raises_error",
        """
        def raises_error(x):
            if x < 0:
                raise ValueError('negative: {}'.format(x))
            return x
        """,
        -3,
    ),
    case(
        "key_error",
        """
        def key_error(d):
            return d['missing']
        """,
        {"present": 1},
    ),
    case(
        "walrus_and_comprehensions",
        """
        def walrus_and_comprehensions(xs):
            squares = [y for x in xs if (y := x * x) > 10]
            return squares, {x % 3: x for x in xs}, any((z := x) > 4 for x in xs), z
        """,
        [1, 3, 5, 7],
    ),
    case(
        "global_counter",
        """
        calls = 0


        def bump():
            global calls
            calls += 1
            return calls


        def global_counter(n):
            for _ in range(n):
                bump()
            return calls
        """,
        4,
    ),
    case(
        "nonlocal_accumulator",
        """
        def nonlocal_accumulator(xs):
            total = 0

            def add(x):
                nonlocal total
                total += x

            for x in xs:
                add(x)
            return total
        """,
        [1, 2, 3.5],
    ),
    case(
        "sorting_stability",
        """
        def sorting_stability(words):
            return sorted(words, key=str.lower), sorted(words, key=lambda w: (-len(w), w))
        """,
        ["banana", "Apple", "cherry", "apple", "Fig"],
    ),
    case(
        "divmod_and_rounding",
        """
        import math


        def divmod_and_rounding(a, b):
            sign = math.copysign(1.0, -0.0)
            return divmod(a, b), round(a / b, 3), math.trunc(-a / b), -a // b, sign
        """,
        17,
        5,
    ),
    case(
        "int_conversions",
        """
        def int_conversions(s):
            n = int(s, 2)
            return n, oct(n), hex(255), int('ff', 16), chr(ord('a') + 2), (255).bit_length()
        """,
        "101101",
    ),
    case(
        "lcm_and_comb",
        """
        import math


        def lcm_and_comb(n):
            lcm = math.lcm(*range(1, n + 1))
            return lcm, math.comb(2 * n, n), math.perm(n, 3), math.prod(range(1, n))
        """,
        20,
    ),
    case(
        "typed_optional",
        """
        from typing import Dict, Optional, Union


        def typed_optional(d: Dict[str, int], key: str) -> Optional[Union[int, str]]:
            value: Optional[int] = d.get(key)
            if value is None:
                return None
            return value if value % 2 else str(value)
        """,
        {"a": 4, "b": 3},
        "a",
    ),
    case(
        "typevar_generic",
        """
        from typing import Generic, List, TypeVar

        T = TypeVar('T')


        class Box(Generic[T]):
            def __init__(self, item: T):
                self.item = item

            def get(self) -> T:
                return self.item


        def typevar_generic(xs: List[int]) -> List[int]:
            return [Box(x).get() * 2 for x in xs]
        """,
        [1, 2, 3],
    ),
    case(
        "dict_methods",
        """
        def dict_methods(pairs):
            d = dict(pairs)
            d.setdefault('z', 0)
            d.update(q=9)
            popped = d.pop('a')
            return sorted(d.items()), popped, list(d.keys())[-1], dict.fromkeys('ab', 1)
        """,
        [("a", 1), ("b", 2)],
    ),
    case(
        "counter_arith",
        """
        from collections import Counter


        def counter_arith(a, b):
            ca, cb = Counter(a), Counter(b)
            return sorted((ca + cb).items()), sorted((ca - cb).elements()), (ca & cb).most_common()
        """,
        "aabbc",
        "abd",
    ),
    case(
        "deque_rotate",
        """
        from collections import deque


        def deque_rotate(xs, k):
            d = deque(xs, maxlen=5)
            d.rotate(k)
            d.appendleft(0)
            return list(d), d.maxlen
        """,
        [1, 2, 3, 4, 5],
        2,
    ),
    case(
        "partial_reduce",
        """
        from functools import partial, reduce


        def power(base, exp):
            return base ** exp


        def partial_reduce(xs):
            square = partial(power, exp=2)
            return [square(x) for x in xs], reduce(lambda a, b: a * 10 + b, xs)
        """,
        [1, 2, 3],
    ),
    case(
        "cmp_sorting",
        """
        from functools import cmp_to_key


        def cmp_sorting(nums):
            def cmp(a, b):
                return (a + b < b + a) - (a + b > b + a)
            return ''.join(sorted(map(str, nums), key=cmp_to_key(cmp)))
        """,
        [3, 30, 34, 5, 9],
    ),
    case(
        "assertion",
        """
        def assertion(x):
            assert x > 0, 'must be positive'
            return x
        """,
        0,
    ),
    case(
        "recursion_hanoi",
        """
        def recursion_hanoi(n):
            moves = []

            def move(k, a, b, c):
                if k:
                    move(k - 1, a, c, b)
                    moves.append((a, c))
                    move(k - 1, b, a, c)

            move(n, 'A', 'B', 'C')
            return len(moves), moves[:3]
        """,
        6,
    ),
    case(
        "while_else",
        """
        def while_else(n):
            i = 2
            while i * i <= n:
                if n % i == 0:
                    break
                i += 1
            else:
                return 'prime'
            return 'composite'
        """,
        97,
    ),
    case(
        "unpacking",
        """
        def unpacking(xs):
            first, *middle, last = xs
            (a, b), c = (1, 2), 3
            return first, middle, last, a + b + c, [*xs, *middle], {**{'a': 1}, 'b': 2}
        """,
        [1, 2, 3, 4],
    ),
    case(
        "slicing",
        """
        def slicing(s):
            return s[::2], s[-3:], s[1:-1:3], s[slice(2, 5)], list(range(10))[::-3]
        """,
        "abcdefghijkl",
    ),
    case(
        "try_finally",
        """
        def try_finally(xs):
            log = []
            for x in xs:
                try:
                    log.append(10 // x)
                except ZeroDivisionError as e:
                    log.append(type_name(e))
                finally:
                    log.append('done')
            return log


        def type_name(e):
            return 'zero' if isinstance(e, ZeroDivisionError) else 'other'
        """,
        [2, 0, 5],
    ),
    case(
        "multiline_fstrings",
        """
        def multiline_fstrings(name, score):
            width = 10
            return f'{name!r:<{width}}|{score:>8.3f}|{score:+.1e}|{name.upper()}'
        """,
        "ann",
        93.14159,
    ),
    case(
        "empty_results",
        """
        def empty_results(n):
            return [], (), {}, set(), frozenset(), '', b'', None, 0, 0.0, -0.0, False
        """,
        0,
    ),
    case(
        "negative_big_int",
        """
        def negative_big_int(n):
            return -(7 ** n), [2 ** 64, -(2 ** 63)], {2 ** 100: 'big'}
        """,
        4000,
    ),
    case(
        "normal_dist",
        """
        from statistics import NormalDist


        def normal_dist(mu, sigma):
            d = NormalDist(mu, sigma)
            return round(d.cdf(mu + sigma), 6), round(d.inv_cdf(0.5), 6)
        """,
        10.0,
        2.0,
    ),
    case(
        "string_constants",
        """
        from string import ascii_lowercase, digits, punctuation


        def string_constants(s):
            return (sum(c in ascii_lowercase for c in s), sum(c in digits for c in s),
                    sum(c in punctuation for c in s))
        """,
        "abc123!?",
    ),
    case(
        "cached_prop",
        """
        from functools import cached_property


        class Data:
            def __init__(self, xs):
                self.xs = xs
                self.calls = 0

            @cached_property
            def total(self):
                self.calls += 1
                return sum(self.xs)


        def cached_prop(xs):
            d = Data(xs)
            return d.total + d.total, d.calls
        """,
        [1, 2, 3],
    ),
]


def python_result(entry: str, source: str, args: tuple[Any, ...]) -> tuple[str, Any, str]:
    """(status, value, stdout) of `entry(*args)` in plain Python in this process (trusted)."""
    namespace: dict[str, Any] = {"__name__": "__sandbox__"}
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        try:
            exec(source, namespace)
            value = namespace[entry](*copy.deepcopy(args))
        except Exception:
            return "error", None, printed.getvalue()
    return "ok", value, printed.getvalue()


def same(a: Any, b: Any) -> bool:
    """Equal values of equal types all the way down, with nan equal to nan."""
    if type(a) is not type(b):
        return False
    if type(a) is float:
        return a == b or (math.isnan(a) and math.isnan(b))
    if type(a) in (list, tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if type(a) is dict:
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


def test_ordinary_programs_pass_the_rules_and_compute_what_python_computes() -> None:
    assert len(PROGRAMS) >= 100
    refused = {e: validate_program(s, e) for e, s, _ in PROGRAMS if validate_program(s, e)}
    verdicts: list[Verdict] = run_batch([Call(s, e, a) for e, s, a in PROGRAMS], CONFIG)
    differ = []
    for (entry, source, args), verdict in zip(PROGRAMS, verdicts, strict=True):
        status, value, printed = python_result(entry, source, args)
        if not (verdict.status == status and same(verdict.value, value)):
            differ.append((entry, verdict.status, verdict.message[:200], status))
        elif verdict.stdout != printed:
            differ.append((entry, "stdout", verdict.stdout[:200], printed[:200]))
    matched = len(PROGRAMS) - len(differ)
    print(f"{matched}/{len(PROGRAMS)} match; refused: {refused}; differ: {differ}")
    assert matched >= 0.95 * len(PROGRAMS), differ
