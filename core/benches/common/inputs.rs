//! Inputs shared by the micro-benchmarks (core and sidecar).

/// Neutral English prose of about `bytes` bytes (never shorter): ASCII
/// letters, spaces, commas and periods only, the same for every run.
pub fn prose(bytes: usize, seed: u64) -> String {
    const WORDS: &[&str] = &[
        "the",
        "garden",
        "morning",
        "light",
        "slowly",
        "river",
        "bread",
        "kitchen",
        "window",
        "quiet",
        "walk",
        "autumn",
        "leaves",
        "warm",
        "tea",
        "market",
        "village",
        "bicycle",
        "path",
        "along",
        "under",
        "old",
        "bridge",
        "children",
        "library",
        "book",
        "chapter",
        "story",
        "afternoon",
        "rain",
        "cloud",
        "soft",
        "table",
        "friends",
        "dinner",
        "recipe",
        "onion",
        "butter",
        "flour",
        "oven",
        "simmer",
        "gently",
        "season",
        "spring",
        "blossom",
        "orchard",
        "apple",
        "harvest",
        "basket",
        "evening",
        "lamp",
        "painting",
        "colour",
        "canvas",
        "harbour",
        "boat",
        "sail",
        "wind",
        "coast",
        "meadow",
        "flowers",
        "bees",
        "honey",
        "hill",
        "cottage",
        "stone",
        "wall",
        "music",
        "piano",
        "melody",
        "song",
        "neighbour",
        "street",
        "corner",
        "cafe",
        "coffee",
        "newspaper",
        "and",
        "with",
        "near",
        "across",
        "beside",
        "through",
        "before",
        "after",
        "while",
        "often",
        "usually",
        "sometimes",
    ];
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407) | 1;
    let mut next = move |n: usize| {
        // xorshift64*
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n
    };
    let mut out = String::with_capacity(bytes + 128);
    while out.len() < bytes {
        let words = 8 + next(10);
        for i in 0..words {
            let w = WORDS[next(WORDS.len())];
            if i == 0 {
                let mut cs = w.chars();
                if let Some(c) = cs.next() {
                    out.push(c.to_ascii_uppercase());
                    out.push_str(cs.as_str());
                }
            } else {
                out.push(' ');
                out.push_str(w);
                if i + 1 < words && next(9) == 0 {
                    out.push(',');
                }
            }
        }
        out.push_str(". ");
    }
    out.truncate(out.trim_end().len());
    out
}

/// The messages of an OpenAI chat body of about `bytes`: a system prompt,
/// then user and assistant turns of neutral prose, the last one from the
/// user. Each bench adds the parameters it needs.
pub fn chat_messages(bytes: usize) -> Vec<serde_json::Value> {
    let turns = (bytes / 4096).max(1) * 2 - 1;
    let per_turn = bytes.saturating_sub(200) / turns;
    let mut messages =
        vec![serde_json::json!({"role": "system", "content": "You are a helpful assistant. Answer briefly."})];
    for i in 0..turns {
        let role = if i % 2 == 0 { "user" } else { "assistant" };
        messages.push(serde_json::json!({"role": role, "content": prose(per_turn, i as u64 + 1)}));
    }
    messages
}
