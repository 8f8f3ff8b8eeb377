//! The second check before a semantic hit is served.
//!
//! Mean-pooled sentence embeddings barely move when the same words are put in
//! another order, or when one name, number word or negation changes:
//! "convert dollars to euros" and "convert euros to dollars" are about as
//! similar as two real paraphrases. A similarity threshold alone cannot tell
//! them apart, so a semantic candidate is served only when the two prompts
//! also agree on what the embedding does not see ([`compare`]):
//!
//! - **negation**: the same number of negation words (`not`, `never`,
//!   `n't`, `without`, `dont`, …);
//! - **numbers**: the same number words (`two`, `hundred`, `first`, …; digit
//!   runs already keep prompts in different partitions, see `cache::key`);
//! - **entities**: no name is replaced by another: a name one prompt writes
//!   with a capital (not at the start of a sentence) or in capitals (`USD`)
//!   and the other lacks, while the other has a name the first lacks
//!   (`France` / `Spain`). A name only added (`the National Mall` / `Washington's
//!   National Mall`) is left to the threshold;
//! - **order**: the content words both prompts share keep their roles. Each
//!   shared word has a *marker*, the nearest direction word before it in its
//!   clause (`from`, `to`, `into`, `than`, `by`, `vs`, …). Two prompts differ
//!   when a shared word has two different markers (`from Paris to Rome` /
//!   `from Rome to Paris`), or when the shared words come in another order
//!   that is not one phrase moved as a whole with its markers kept
//!   (`Caesar killed Brutus` / `Brutus killed Caesar`; `dollars to euros` /
//!   `euros to dollars`). One phrase moved with its markers is a paraphrase
//!   (`flights from Paris to Rome` / `flights to Rome from Paris`, `in 2003
//!   the firm moved` / `the firm moved in 2003`).
//!
//! - **time**: no calendar word replaced by another (`today` / `tomorrow`,
//!   `Monday` / `Friday`);
//! - **opposite**: no word replaced by its opposite (`higher` / `lower`,
//!   `before` / `after`, `buy` / `sell`, `man` / `woman`: a fixed list of
//!   English pairs);
//! - **person**: no person replaced by another (`you're` / `I'm`, `he` /
//!   `she`): each prompt speaks of a person the other does not;
//! - **added**: neither prompt asks for more than the other: one with at
//!   least three content words the other lacks, while the other adds at most
//!   one, asks a larger question (`summarize this article` / `summarize this
//!   article in bullet points for a busy manager`), and so does one that joins
//!   a word the other lacks to a shared one with `and` / `or` (`a poem about
//!   dogs` / `a poem about cats and dogs`).
//!
//! The rules are about English function words and word lists, not about any corpus: they are
//! measured (false hits on adversarial pairs, hits on paraphrases) in
//! `docs/cache-quality.md`. A refused candidate is a miss: the question goes
//! to the provider, which costs one call, never a wrong answer.

use std::collections::{HashMap, HashSet};

/// Which of the checks found the two prompts different.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Differences {
    pub negation: bool,
    pub numbers: bool,
    pub entities: bool,
    pub order: bool,
    /// A calendar word replaced by another (`today` / `tomorrow`, `Monday` /
    /// `Friday`, `June` / `July`).
    pub time: bool,
    /// A word replaced by its opposite (`higher` / `lower`, `before` /
    /// `after`, `buy` / `sell`, `man` / `woman`).
    pub opposite: bool,
    /// The person spoken of replaced (`you` / `I`, `he` / `she`).
    pub person: bool,
    /// One prompt asks for more: at least [`ADDED_MIN`] content words the other
    /// lacks, while the other adds at most one of its own (`summarize this
    /// article` / `summarize this article in bullet points for a busy
    /// manager`), or one joined with `and` / `or` to a word both have (`a
    /// poem about dogs` / `a poem about cats and dogs`).
    pub added: bool,
    /// One or two content words of each prompt replaced by others (`a guitar` /
    /// `a flute`). Measured, not part of [`Differences::any`]: it also refuses
    /// synonyms (see `docs/cache-quality.md`).
    pub substitution: bool,
}

impl Differences {
    /// Whether any check found a difference (the candidate is not served).
    pub fn any(&self) -> bool {
        self.reason().is_some()
    }

    /// The first difference found, for logs.
    pub fn reason(&self) -> Option<&'static str> {
        [
            (self.negation, "negation"),
            (self.numbers, "numbers"),
            (self.entities, "entities"),
            (self.order, "order"),
            (self.time, "time"),
            (self.opposite, "opposite"),
            (self.person, "person"),
            (self.added, "added"),
        ]
        .into_iter()
        .find_map(|(differs, name)| differs.then_some(name))
    }
}

/// Whether two content words are one word in two forms (`play` / `playing`,
/// `summarize` / `summary`): one is a prefix of the other, or they share five letters.
fn same_stem(a: &str, b: &str) -> bool {
    let common = a.chars().zip(b.chars()).take_while(|(x, y)| x == y).count();
    let (short, long) = if a.chars().count() <= b.chars().count() { (a, b) } else { (b, a) };
    a == b || common >= 5 || (common >= 4 && common == short.chars().count() && long.starts_with(short))
}

/// Words that mark the role of the phrase after them.
const MARKERS: &[&str] =
    &["from", "to", "into", "onto", "toward", "towards", "than", "by", "vs", "versus", "against", "per", "unlike"];

/// Negation words; `n't` endings count too, and so do the contractions
/// written without their apostrophe, as chat prompts often are (`isnt`, `dont`).
const NEGATIONS: &[&str] = &[
    "not", "no", "never", "none", "nobody", "nothing", "nowhere", "neither", "nor", "cannot", "without", "isnt",
    "arent", "wasnt", "werent", "dont", "doesnt", "didnt", "cant", "couldnt", "wont", "wouldnt", "shouldnt", "hasnt",
    "havent", "hadnt", "mustnt", "neednt", "aint",
];

const NUMBER_WORDS: &[&str] = &[
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
    "twenty",
    "thirty",
    "forty",
    "fifty",
    "sixty",
    "seventy",
    "eighty",
    "ninety",
    "hundred",
    "thousand",
    "million",
    "billion",
    "trillion",
    "first",
    "second",
    "third",
    "fourth",
    "fifth",
    "sixth",
    "seventh",
    "eighth",
    "ninth",
    "tenth",
    "half",
    "twice",
    "double",
    "triple",
    "dozen",
    "once",
    "thrice",
    "quarter",
];

/// Calendar words: a prompt about `tomorrow` is not one about `today`.
/// (`may` and `march` are left out: they are mostly a verb; written with a
/// capital they are names, see [`Differences::entities`].)
const CALENDAR: &[&str] = &[
    "today",
    "tonight",
    "tomorrow",
    "yesterday",
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
    "january",
    "february",
    "april",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
    "weekday",
    "weekend",
];

/// Pairs of opposites: one replaced by the other reverses what is asked.
const OPPOSITES: &[(&str, &str)] = &[
    ("high", "low"),
    ("higher", "lower"),
    ("highest", "lowest"),
    ("more", "less"),
    ("most", "least"),
    ("before", "after"),
    ("above", "below"),
    ("up", "down"),
    ("inside", "outside"),
    ("increase", "decrease"),
    ("increased", "decreased"),
    ("increases", "decreases"),
    ("increasing", "decreasing"),
    ("rise", "fall"),
    ("rises", "falls"),
    ("rising", "falling"),
    ("rose", "fell"),
    ("buy", "sell"),
    ("buying", "selling"),
    ("bought", "sold"),
    ("best", "worst"),
    ("better", "worse"),
    ("largest", "smallest"),
    ("biggest", "smallest"),
    ("larger", "smaller"),
    ("bigger", "smaller"),
    ("maximum", "minimum"),
    ("max", "min"),
    ("cheap", "expensive"),
    ("cheapest", "dearest"),
    ("win", "lose"),
    ("won", "lost"),
    ("winning", "losing"),
    ("open", "close"),
    ("opened", "closed"),
    ("opening", "closing"),
    ("start", "end"),
    ("old", "new"),
    ("older", "newer"),
    ("oldest", "newest"),
    ("early", "late"),
    ("earlier", "later"),
    ("earliest", "latest"),
    ("hot", "cold"),
    ("warm", "cool"),
    ("fast", "slow"),
    ("faster", "slower"),
    ("fastest", "slowest"),
    ("add", "remove"),
    ("added", "removed"),
    ("enable", "disable"),
    ("enabled", "disabled"),
    ("true", "false"),
    ("north", "south"),
    ("east", "west"),
    ("northern", "southern"),
    ("eastern", "western"),
    ("left", "right"),
    ("import", "export"),
    ("imports", "exports"),
    ("encrypt", "decrypt"),
    ("compress", "decompress"),
    ("upload", "download"),
    ("push", "pull"),
    ("accept", "reject"),
    ("allow", "deny"),
    ("include", "exclude"),
    ("input", "output"),
    ("ascending", "descending"),
    ("uppercase", "lowercase"),
    ("sunrise", "sunset"),
    ("arrival", "departure"),
    ("gain", "loss"),
    ("gains", "losses"),
    ("profit", "loss"),
    ("strong", "weak"),
    ("stronger", "weaker"),
    ("positive", "negative"),
    ("easy", "hard"),
    ("easier", "harder"),
    ("long", "short"),
    ("longer", "shorter"),
    ("young", "old"),
    ("younger", "older"),
    ("man", "woman"),
    ("men", "women"),
    ("boy", "girl"),
    ("boys", "girls"),
    ("male", "female"),
    ("father", "mother"),
    ("husband", "wife"),
    ("son", "daughter"),
    ("brother", "sister"),
    ("love", "hate"),
    ("agree", "disagree"),
    ("legal", "illegal"),
    ("possible", "impossible"),
    ("happy", "sad"),
    ("success", "failure"),
    ("pros", "cons"),
    ("advantages", "disadvantages"),
];

/// Personal pronouns by the person they speak of: first, second, third
/// masculine, third feminine.
const PERSONS: &[&[&str]] = &[
    &["i", "me", "my", "mine", "myself", "we", "us", "our", "ours", "ourselves"],
    &["you", "your", "yours", "yourself", "yourselves"],
    &["he", "him", "his", "himself"],
    &["she", "her", "hers", "herself"],
];

/// Content words one prompt must add (with the other adding at most one) to
/// ask for more than the other.
pub const ADDED_MIN: usize = 3;

/// Function words: never compared for order (they move freely between paraphrases).
const FUNCTION_WORDS: &[&str] = &[
    "a", "an", "the", "this", "that", "these", "those", "some", "any", "each", "every", "all", "both", "either", "i",
    "me", "my", "mine", "we", "us", "our", "you", "your", "he", "him", "his", "she", "her", "it", "its", "they",
    "them", "their", "is", "are", "was", "were", "be", "been", "being", "am", "do", "does", "did", "done", "have",
    "has", "had", "can", "could", "will", "would", "shall", "should", "may", "might", "must", "of", "in", "on", "at",
    "for", "with", "about", "as", "into", "onto", "from", "to", "than", "by", "vs", "versus", "against", "per",
    "unlike", "toward", "towards", "over", "under", "up", "down", "out", "off", "and", "or", "but", "if", "so", "then",
    "what", "which", "who", "whom", "whose", "when", "where", "why", "how", "there", "here", "please", "just", "also",
    "very", "really", "tell", "give", "get", "let", "know", "want", "like", "s", "it's", "i'm", "what's", "how's",
    "there's", "that's", "let's", "i'd", "i've", "you're", "way", "thing",
];

/// Texts longer than this many words are compared on their first words only (the cost stays flat).
const MAX_WORDS: usize = 512;

#[derive(Debug)]
struct Word {
    /// Lower case, possessive dropped, crude plural folding.
    norm: String,
    /// Lower case, possessive dropped, before any contraction (`you're` -> `you`).
    lower: String,
    /// Written with a capital where a sentence does not start, or in capitals.
    name: bool,
    /// The nearest marker before it in its clause.
    marker: Option<&'static str>,
    negation: bool,
}

fn fold_plural(w: &str) -> String {
    if w.len() > 4 && w.ends_with("ies") {
        format!("{}y", &w[..w.len() - 3])
    } else if w.len() > 3 && w.ends_with('s') && !w.ends_with("ss") && !w.ends_with("us") && !w.ends_with("is") {
        w[..w.len() - 1].to_string()
    } else {
        w.to_string()
    }
}

/// Words that start another phrase: the marker before them no longer applies.
const PHRASE_STARTS: &[&str] = &[
    "in", "on", "at", "for", "with", "of", "about", "over", "under", "via", "through", "during", "after", "before",
    "and", "or", "but", "if", "because", "while", "when", "where", "which", "who", "that", "is", "are", "was", "were",
];

/// Reads texts word by word, keeping the marker and sentence state.
#[derive(Default)]
struct Reader {
    out: Vec<Word>,
    current: String,
    sentence_start: bool,
    marker: Option<&'static str>,
}

impl Reader {
    fn flush(&mut self) {
        if self.current.is_empty() {
            return;
        }
        let raw = self.current.trim_matches('\'');
        let lower = raw.to_lowercase();
        let lower = lower.strip_suffix("'s").unwrap_or(&lower).to_string();
        let first_upper = raw.chars().next().is_some_and(char::is_uppercase);
        let letters: Vec<char> = raw.chars().filter(|c| c.is_alphabetic()).collect();
        let all_caps = letters.len() >= 2 && letters.iter().all(|c| c.is_uppercase());
        let name = (all_caps || (first_upper && !self.sentence_start)) && lower != "i";
        let negation = NEGATIONS.contains(&lower.as_str()) || lower.ends_with("n't");
        if let Some(&m) = MARKERS.iter().find(|m| **m == lower) {
            self.marker = Some(m);
        } else if PHRASE_STARTS.contains(&lower.as_str()) {
            self.marker = None;
        }
        if !lower.is_empty() {
            let base = match lower.split_once('\'') {
                Some((head, _)) if !negation && !head.is_empty() => head.to_string(),
                _ => lower.clone(),
            };
            self.out.push(Word { norm: fold_plural(&lower), lower: base, name, marker: self.marker, negation });
        }
        self.sentence_start = false;
        self.current.clear();
    }
}

fn words(text: &str) -> Vec<Word> {
    let mut r = Reader { sentence_start: true, ..Reader::default() };
    for c in text.chars() {
        if r.out.len() >= MAX_WORDS {
            break;
        }
        let c = if c == '\u{2019}' { '\'' } else { c };
        if c.is_alphanumeric() || (c == '\'' && !r.current.is_empty()) {
            r.current.push(c);
            continue;
        }
        r.flush();
        match c {
            '.' | '!' | '?' | '\n' | ':' | ';' | '"' => {
                r.sentence_start = true;
                r.marker = None;
            }
            ',' | '(' | ')' => r.marker = None,
            _ => {}
        }
    }
    if r.out.len() < MAX_WORDS {
        r.flush();
    }
    r.out
}

fn is_content(w: &Word) -> bool {
    !w.negation && !FUNCTION_WORDS.contains(&w.norm.as_str()) && !NUMBER_WORDS.contains(&w.norm.as_str())
}

fn number_words(ws: &[Word]) -> Vec<&str> {
    let mut v: Vec<&str> = ws.iter().map(|w| w.norm.as_str()).filter(|w| NUMBER_WORDS.contains(w)).collect();
    v.sort_unstable();
    v
}

/// Whether a text is written mostly in capitals (a title): its capitals say nothing.
fn title(ws: &[Word]) -> bool {
    ws.iter().filter(|w| w.name).count() * 2 > ws.len()
}

/// Names of `a` that `b` does not have (as any word, in any case). A text
/// written mostly in capitals (a title) gives no names.
fn names_missing(a: &[Word], b: &[Word]) -> bool {
    !title(a) && a.iter().filter(|w| w.name).any(|n| !b.iter().any(|w| w.norm == n.norm))
}

/// A name of one prompt replaced by another name in the other (a name only
/// added is left to the threshold).
fn entities_differ(a: &[Word], b: &[Word]) -> bool {
    names_missing(a, b) && names_missing(b, a)
}

/// The calendar words of a text, sorted.
fn calendar_words(ws: &[Word]) -> Vec<&str> {
    let mut v: Vec<&str> = ws.iter().map(|w| w.lower.as_str()).filter(|w| CALENDAR.contains(w)).collect();
    v.sort_unstable();
    v
}

/// Both prompts name a time, and not the same one (a time only added is left to the threshold).
fn time_differs(a: &[Word], b: &[Word]) -> bool {
    let (ta, tb) = (calendar_words(a), calendar_words(b));
    !ta.is_empty() && !tb.is_empty() && ta != tb
}

/// A word of one prompt whose opposite the other has instead.
fn opposite_differs(a: &[Word], b: &[Word]) -> bool {
    let sa: HashSet<&str> = a.iter().map(|w| w.lower.as_str()).collect();
    let sb: HashSet<&str> = b.iter().map(|w| w.lower.as_str()).collect();
    let swapped = |x: &str, y: &str| sa.contains(x) && sb.contains(y) && !sa.contains(y) && !sb.contains(x);
    OPPOSITES.iter().any(|&(x, y)| swapped(x, y) || swapped(y, x))
}

/// The persons (indexes into [`PERSONS`]) a text speaks of, as a bit set.
fn persons(ws: &[Word]) -> u8 {
    ws.iter().fold(0, |set, w| {
        PERSONS.iter().enumerate().filter(|(_, p)| p.contains(&w.lower.as_str())).fold(set, |s, (i, _)| s | 1 << i)
    })
}

/// Each prompt speaks of a person the other does not (`you're` / `I'm`).
fn person_differs(a: &[Word], b: &[Word]) -> bool {
    let (pa, pb) = (persons(a), persons(b));
    pa & !pb != 0 && pb & !pa != 0
}

/// Content words that occur exactly once in `ws`, with their index.
fn single_content(ws: &[Word]) -> HashMap<&str, usize> {
    let mut count: HashMap<&str, (usize, usize)> = HashMap::new();
    for (i, w) in ws.iter().enumerate().filter(|(_, w)| is_content(w)) {
        let e = count.entry(w.norm.as_str()).or_insert((0, i));
        e.0 += 1;
    }
    count.into_iter().filter(|(_, (n, _))| *n == 1).map(|(w, (_, i))| (w, i)).collect()
}

/// Whether `perm` (positions 0..n in another order) is the identity with at
/// most one contiguous block moved elsewhere (two adjacent runs swapped).
fn one_block_moved(perm: &[usize]) -> bool {
    let Some(i) = perm.iter().enumerate().position(|(k, &p)| k != p) else {
        return true;
    };
    let Some(j) = perm.iter().enumerate().rposition(|(k, &p)| k != p) else {
        return true;
    };
    let seg = &perm[i..=j];
    // seg must be k..=j followed by i..k, each run consecutive.
    let k = seg[0];
    let split = j - k + 1;
    if split >= seg.len() {
        return false;
    }
    seg[..split].iter().enumerate().all(|(n, &p)| p == k + n)
        && seg[split..].iter().enumerate().all(|(n, &p)| p == i + n)
}

fn order_differs(a: &[Word], b: &[Word]) -> bool {
    let sa = single_content(a);
    let sb = single_content(b);
    let mut shared: Vec<(usize, usize)> = sa.iter().filter_map(|(w, &ia)| sb.get(w).map(|&ib| (ia, ib))).collect();
    shared.sort_unstable();
    // A shared word with two different markers plays another role.
    let markers_kept = shared.iter().all(|&(ia, ib)| a[ia].marker == b[ib].marker);
    let swapped_roles = shared.iter().any(|&(ia, ib)| match (a[ia].marker, b[ib].marker) {
        (Some(x), Some(y)) => x != y,
        _ => false,
    });
    if swapped_roles {
        return true;
    }
    // The order in `b` of the shared words, ranked.
    let mut by_b: Vec<usize> = (0..shared.len()).collect();
    by_b.sort_unstable_by_key(|&k| shared[k].1);
    let mut perm = vec![0; shared.len()];
    for (rank_in_b, &k) in by_b.iter().enumerate() {
        perm[k] = rank_in_b;
    }
    if perm.iter().enumerate().all(|(k, &p)| k == p) {
        return false;
    }
    !(markers_kept && one_block_moved(&perm))
}

/// Content words of `a` with no word of the same stem in `b`.
fn unmatched<'a>(a: &'a [Word], b: &[Word]) -> Vec<&'a str> {
    let mut out: Vec<&str> = a
        .iter()
        .filter(|w| is_content(w) && !b.iter().any(|v| is_content(v) && same_stem(&w.norm, &v.norm)))
        .map(|w| w.norm.as_str())
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// One or two content words of each prompt that the other lacks (`only_a`,
/// `only_b`: how many).
fn substituted(only_a: usize, only_b: usize) -> bool {
    (1..=2).contains(&only_a) && (1..=2).contains(&only_b)
}

/// One prompt adds at least [`ADDED_MIN`] content words, the other at most one.
fn added(only_a: usize, only_b: usize) -> bool {
    (only_a >= ADDED_MIN && only_b <= 1) || (only_b >= ADDED_MIN && only_a <= 1)
}

fn has_stem(ws: &[Word], w: &Word) -> bool {
    ws.iter().any(|v| is_content(v) && same_stem(&w.norm, &v.norm))
}

/// `a` joins a content word that `b` lacks to one `b` has, with `and` or `or`
/// (`the girlfriend and Zimmerman` / `Zimmerman`, `Jammu and Kashmir` / `Kashmir`).
fn conjunct_added(a: &[Word], b: &[Word]) -> bool {
    let joined = |w: &Word| w.norm == "and" || w.norm == "or";
    let shared = |w: &Word| is_content(w) && has_stem(b, w);
    a.windows(3).any(|t| {
        joined(&t[1])
            && ((is_content(&t[0]) && !has_stem(b, &t[0]) && shared(&t[2]))
                || (is_content(&t[2]) && !has_stem(b, &t[2]) && shared(&t[0])))
    })
}

/// What differs between two prompts beyond what their embeddings show.
pub fn compare(a: &str, b: &str) -> Differences {
    Question::new(a).compare(b)
}

/// A prompt read once, to be compared with several cached ones.
pub struct Question(Vec<Word>);

impl Question {
    pub fn new(text: &str) -> Question {
        Question(words(text))
    }

    /// [`compare`] of this prompt with `other`.
    pub fn compare(&self, other: &str) -> Differences {
        differences(&self.0, &words(other))
    }
}

fn differences(wa: &[Word], wb: &[Word]) -> Differences {
    let (only_a, only_b) = (unmatched(wa, wb).len(), unmatched(wb, wa).len());
    Differences {
        negation: wa.iter().filter(|w| w.negation).count() != wb.iter().filter(|w| w.negation).count(),
        numbers: number_words(wa) != number_words(wb),
        entities: entities_differ(wa, wb),
        order: order_differs(wa, wb),
        time: time_differs(wa, wb),
        opposite: opposite_differs(wa, wb),
        person: person_differs(wa, wb),
        added: added(only_a, only_b) || conjunct_added(wa, wb) || conjunct_added(wb, wa),
        substitution: substituted(only_a, only_b),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn differs(a: &str, b: &str) -> Option<&'static str> {
        let d = compare(a, b);
        assert_eq!(d, compare(b, a), "the check is symmetric: {a:?} / {b:?}");
        d.reason()
    }

    #[test]
    fn reversed_direction_or_roles_differ_in_order() {
        for (a, b) in [
            ("Convert 100 dollars to euros", "Convert 100 euros to dollars"),
            ("How do I convert Celsius to Fahrenheit?", "How do I convert Fahrenheit to Celsius?"),
            ("Cheapest flights from New York to Florida", "Cheapest flights from Florida to New York"),
            (
                "Transfer money from my savings account to checking",
                "Transfer money from my checking account to savings",
            ),
            ("Why did Caesar betray Pompey?", "Why did Pompey betray Caesar?"),
            ("Is a dolphin bigger than a shark?", "Is a shark bigger than a dolphin?"),
            ("translate this from english to french", "translate this from french to english"),
        ] {
            assert_eq!(differs(a, b), Some("order"), "{a:?} / {b:?}");
        }
    }

    #[test]
    fn changed_negation_numbers_or_names_differ() {
        assert_eq!(differs("Is Python typed?", "Isn't Python typed?"), Some("negation"));
        assert_eq!(
            differs("Which drugs interact with aspirin?", "Which drugs do not interact with aspirin?"),
            Some("negation")
        );
        assert_eq!(differs("Name two prime numbers", "Name three prime numbers"), Some("numbers"));
        assert_eq!(differs("What is the capital of France?", "What is the capital of Spain?"), Some("entities"));
        assert_eq!(differs("Convert 5 USD", "Convert 5 EUR"), Some("entities"));
        assert_eq!(
            differs(
                "Man sets himself on fire on the National Mall",
                "Man sets himself on fire at Washington's National Mall"
            ),
            None
        );
    }

    #[test]
    fn paraphrases_pass() {
        for (a, b) in [
            ("How do I reset my password?", "How can I reset my password?"),
            ("Cheapest flights from New York to Florida", "Cheapest flights to Florida from New York"),
            ("In 2003 the company moved to Texas.", "The company moved to Texas in 2003."),
            ("What's the capital of France?", "what is the capital city of France"),
            ("Isn't Python typed?", "Is Python not typed?"),
            ("Explain how vaccines work", "Can you explain how vaccines work?"),
            ("Summarize the plot of Hamlet", "Give me a summary of the plot of Hamlet"),
            (
                "What is heavier, a kilo of feathers or a kilo of steel?",
                "What is heavier, a kilo of steel or a kilo of feathers?",
            ),
        ] {
            assert_eq!(differs(a, b), None, "{a:?} / {b:?}: {:?}", compare(a, b));
        }
    }

    #[test]
    fn replaced_times_opposites_and_persons_differ() {
        assert_eq!(
            differs("What is the weather in Paris today?", "What is the weather in Paris tomorrow?"),
            Some("time")
        );
        assert!(compare("Meetings on Monday", "Meetings on Friday").time);
        assert_eq!(differs("Did the shares close higher?", "Did the shares close lower?"), Some("opposite"));
        assert_eq!(differs("What to check before a flight", "What to check after a flight"), Some("opposite"));
        assert_eq!(
            differs("Is it a good time to buy bitcoin?", "Is it a good time to sell bitcoin?"),
            Some("opposite")
        );
        assert_eq!(differs("Why is a man singing?", "Why is a woman singing?"), Some("opposite"));
        assert_eq!(differs("You're \"a bunch of cells.\"", "I'm \"a bunch of cells.\""), Some("person"));
        assert_eq!(differs("What did he say about the budget?", "What did she say about the budget?"), Some("person"));
        assert_eq!(differs("Being in a gang isnt a crime.", "Being in a gang is a crime."), Some("negation"));
    }

    #[test]
    fn a_larger_question_differs_by_what_it_adds() {
        assert_eq!(
            differs("Summarize this article", "Summarize this article in three bullet points for a busy manager"),
            Some("numbers")
        );
        assert_eq!(
            differs("Summarize this article", "Summarize this article in bullet points for a busy manager"),
            Some("added")
        );
        assert_eq!(
            differs(
                "Capital offenses in Iran include murder, rape, armed robbery, apostasy, blasphemy and treason.",
                "Capital offenses in Iran include murder, rape and armed robbery."
            ),
            Some("added")
        );
        assert_eq!(differs("Write a poem about dogs", "Write a poem about cats and dogs"), Some("added"));
        assert_eq!(
            differs("According to Zimmerman he did.", "According to the girlfriend and Zimmerman, he did."),
            Some("added")
        );
        assert_eq!(differs("Pros of Rust", "Pros or cons of Rust"), Some("added"));
    }

    #[test]
    fn times_persons_and_words_only_added_or_kept_pass() {
        for (a, b) in [
            // A time, a person or a word added on one side only is left to the threshold.
            ("What is the weather in Paris?", "What is the weather in Paris today?"),
            ("How do I reset my password?", "How can I reset my password?"),
            ("How do I reset my password?", "Reset my password"),
            ("Which is better, more RAM or a faster CPU?", "Which is better: a faster CPU or more RAM?"),
            ("Summarize the plot of Hamlet", "Give me a short summary of the plot of Hamlet"),
            // The same pair of opposites on both sides.
            ("Pros and cons of Rust", "What are the pros and cons of Rust?"),
            // A conjunction over words both have.
            ("Compare Rust and Go", "Compare Go and Rust"),
            ("Compare Rust and Go", "How do Rust and Go compare?"),
        ] {
            assert_eq!(differs(a, b), None, "{a:?} / {b:?}: {:?}", compare(a, b));
        }
    }

    #[test]
    fn substitutions_are_told_apart_from_insertions_and_word_forms() {
        assert!(compare("A man is playing a guitar.", "A man is playing a flute.").substitution);
        assert!(compare("What is the weather in Paris today?", "What is the weather in London today?").substitution);
        assert!(!compare("A man is playing a guitar.", "A man plays the guitar.").substitution);
        assert!(!compare("What is the capital of France?", "What is the capital city of France?").substitution);
        assert!(!compare("Summarize the plot of Hamlet", "Give me a summary of the plot of Hamlet").substitution);
        // Reworded throughout: not a minimal pair.
        assert!(
            !compare("How do I reset my password?", "Steps to recover account access after losing login credentials")
                .substitution
        );
        // Measured, not enforced.
        assert!(!compare("A man is playing a guitar.", "A man is playing a flute.").any());
    }

    #[test]
    fn one_block_moved_accepts_rotations_only() {
        assert!(one_block_moved(&[0, 1, 2, 3]));
        assert!(one_block_moved(&[1, 2, 0, 3]));
        assert!(one_block_moved(&[0, 3, 1, 2]));
        assert!(one_block_moved(&[2, 3, 0, 1]));
        assert!(!one_block_moved(&[2, 1, 0]));
        assert!(!one_block_moved(&[1, 0, 3, 2]));
        assert!(one_block_moved(&[]));
    }

    #[test]
    fn titles_give_no_names_and_long_texts_are_bounded() {
        assert_eq!(differs("Obama Signs Budget Deal", "Obama signs the budget deal"), None);
        let long = "word ".repeat(10_000);
        assert_eq!(words(&long).len(), MAX_WORDS);
    }
}
