//! The built-in `default` rule pack.
//!
//! Patterns run on [`normalize`](super::normalize)d text: lowercase, single
//! spaces, look-alikes folded, and spaced-out letters joined (which can also
//! join whole words, so word gaps are written ` ?`). `\b` is rewritten to the
//! ASCII word boundary `(?-u:\b)` so the regex set stays on its fast DFA path.

use super::{Rule, BASE64_PAYLOAD, HOMOGLYPH, ZERO_WIDTH};

fn alt(parts: &[&str]) -> String {
    let joined: Vec<String> = parts.iter().map(|p| format!("(?:{p})")).collect();
    joined.join("|").replace(r"\b", r"(?-u:\b)")
}

fn regex(id: &str, weight: f64, parts: &[&str]) -> Rule {
    Rule { id: id.into(), regex: Some(alt(parts)), phrases: Vec::new(), weight, category: category(id) }
}

fn detector(id: &str, weight: f64) -> Rule {
    Rule { id: id.into(), regex: None, phrases: Vec::new(), weight, category: category(id) }
}

fn category(id: &str) -> Option<String> {
    id.split('.').next().map(str::to_string)
}

/// The rules of the `default` pack.
pub fn default_rules() -> Vec<Rule> {
    vec![
        regex(
            "role_override.ignore_previous",
            0.9,
            &[
                r"\b(?:ignore|disregard|forget|discard|abandon|neglect|set ?aside|do ?not ?follow|don't ?follow|stop ?following) ?(?:all ?|any ?|every ?|each ?)?(?:of ?)?(?:the ?|your ?|my ?|these ?|those ?|this ?|our ?)?(?:(?:previous|prior|preceding|above|earlier|former|foregoing|original|initial|system|developer|safety) ?,? ?(?:and ?|or ?)?){1,3}(?:[a-z]+ ?)?(?:instructions?|rules?|prompts?|directions?|directives?|guidelines?|commands?|guidance|constraints?|restrictions?|programming|context)",
                r"\b(?:ignore|disregard|forget|discard) ?(?:all|any|every) ?(?:of ?)?(?:the ?|your ?|my ?)?(?:instructions|rules|prompts|directions|directives|guidelines|guidance|constraints|restrictions|programming)",
                r"\b(?:ignore|disregard) ?(?:all ?)?(?:of ?)?your ?(?:[a-z]+ ?)?(?:instructions|rules|programming|guidelines|directives|constraints|restrictions|training|prompt)",
                r"\b(?:ignore|disregard|forget) ?(?:all ?)?(?:of ?)?(?:everything|anything|what) ?(?:above|before ?this|prior|previously|earlier|you ?(?:were|have ?been|'ve ?been) ?told)",
            ],
        ),
        regex(
            "role_override.new_instructions",
            0.45,
            &[
                r"\bfrom ?now ?on,? ?(?:you|u) ?(?:will|must|shall|are|should|have ?to|can|may|'ll|'re|do|don't)",
                r"\b(?:new|updated|revised|real|actual|true) ?(?:system ?)?(?:instructions|directives|prompt) ?:",
                r"\byour ?(?:new|real|true|actual) ?(?:instructions|task|role|purpose|directive|persona|identity|goal|objective) ?(?:is|are|:)",
                r"\b(?:override|overwrite|replace|rewrite) ?(?:your|all) ?(?:previous ?|prior ?|system ?|original ?)?(?:instructions|prompt|programming|directives|rules)",
            ],
        ),
        regex(
            "role_override.you_are_now",
            0.35,
            &[
                r"\b(?:you ?are|you're|u ?r) ?now ?(?:an? |the |my |in |no ?longer|free|called|named|going ?to|acting|playing|dan\b|unrestricted|unfiltered|jailbroken|evil|[a-z]*gpt)",
            ],
        ),
        regex(
            "system_prompt.extraction",
            0.85,
            &[
                r"\b(?:reveal|print|show|repeat|display|output|tell|give|share|leak|dump|write ?out|recite|expose|disclose|paste|provide|spell ?out|return|echo|copy|list|type ?out) ?(?:me ?|us ?)?(?:back ?)?(?:all ?|exactly ?)?(?:of ?)?(?:your|ur) ?(?:(?:full|entire|whole|complete|exact|original|initial|hidden|secret|internal|real|verbatim|actual|underlying|current|first|confidential|private|raw|literal) ?){0,3}(?:system ?(?:prompt|message|instructions?)|(?:initial|original|hidden|secret|internal|starting) ?(?:instructions|prompt)|pre-?prompt|developer ?(?:message|prompt|instructions)|prompt\b|(?:instructions|prompt) ?(?:you ?were|you've ?been|that ?you ?were) ?given)",
                r"\b(?:reveal|print|show|repeat|display|output|tell|give|share|leak|dump|write ?out|recite|expose|disclose|paste|spell ?out|echo|type ?out) ?(?:me ?|us ?)?(?:back ?)?(?:all ?|exactly ?)?(?:of ?)?the ?(?:(?:full|entire|whole|complete|exact|verbatim|actual|underlying|confidential|private|raw|literal) ?){0,3}(?:system ?prompt|system ?message|initial ?(?:instructions|prompt)|hidden ?(?:instructions|prompt)|secret ?(?:instructions|prompt)|pre-?prompt)",
                r"\bwhat ?(?:is|was|'s|are|were) ?(?:your|ur) ?(?:(?:full|entire|exact|original|initial|hidden|secret|internal|real|actual|current) ?){0,3}(?:system ?(?:prompt|message|instructions)|(?:initial|original|hidden|secret) ?(?:instructions|prompt)|pre-?prompt)",
                r"\bwhats ?(?:your|ur) ?system ?prompt",
                r"\b(?:repeat|print|output|reproduce|recite|echo) ?(?:back ?)?(?:all ?(?:of ?)?)?(?:everything|the ?(?:text|words|content|lines)) ?(?:above|before ?this),? ?(?:verbatim|word ?for ?word|exactly|starting|including|in ?full)",
            ],
        ),
        regex(
            "system_prompt.probe",
            0.4,
            &[
                r"\b(?:what|which) ?(?:are|were) ?(?:your|ur) ?(?:(?:exact|original|initial|hidden|secret|current|full) ?)?(?:instructions|rules|guidelines|directives|constraints)\b",
                r"\b(?:show|tell|give|print|reveal|repeat) ?(?:me ?)?(?:your|ur) ?(?:instructions|rules|guidelines|directives|configuration|programming)\b",
                r"\bhow ?(?:were|are) ?you ?(?:programmed|instructed|configured|prompted)\b",
            ],
        ),
        regex(
            "jailbreak.dan",
            0.9,
            &[
                r#"\bdan\b ?[,:("'“-]* ?(?:which ?|that ?|who ?)?(?:stands ?for|means|aka)"#,
                r#"[("'“] ?do ?anything ?now"#,
                r#"\bdo ?anything ?now ?[)"'”]"#,
                r#"\bdan\b[a-z0-9,'"“”() :-]{0,40}do ?anything ?now"#,
                r"\b(?:you ?are|you're|act ?as|acting ?as|pretend ?to ?be|pretend ?you ?are|become|roleplay ?as|role-play ?as) ?(?:a ?|the ?)?dan\b",
                r"\bdan ?(?:mode|jailbreak|prompt)\b",
                r"\bdan ?v?\d+(?:\.\d+)+",
                r"\bfreed ?from ?the ?(?:typical ?)?confines ?of ?ai",
            ],
        ),
        regex(
            "jailbreak.developer_mode",
            0.85,
            &[
                r"\bdeveloper ?mode ?(?:enabled|activated|is ?(?:now ?)?(?:enabled|on|active)|output|response)",
                r"\b(?:chatgpt|gpt|ai|assistant|model|claude|llm|yourself|you) ?(?:with|in) ?developer ?mode",
                r"\b(?:simulate|emulate|pretend ?to ?be ?in|act ?as ?if ?in|you ?are ?(?:now ?)?in|you're ?(?:now ?)?in) ?(?:the ?)?developer ?mode",
                r"\bgod ?mode ?(?:enabled|activated)",
            ],
        ),
        regex("jailbreak.keyword", 0.4, &[r"\bjailbr(?:eak|oken|eaking)"]),
        regex(
            "jailbreak.roleplay_unrestricted",
            0.8,
            &[
                r"\bpretend ?(?:that ?)?(?:you|u) ?(?:have|had|are ?under|are ?bound ?by|'re ?under) ?(?:no|zero) ?(?:[a-z]+ ?)?(?:restrictions|rules|filters|limits|limitations|guidelines|boundaries|ethics|morals|policies|constraints|censorship|guardrails)",
                r"\b(?:pretend|imagine|suppose) ?(?:that ?)?(?:you|u) ?(?:are|were|'re) ?(?:an? ?)?(?:unrestricted|unfiltered|uncensored|jailbroken|amoral|unbound|unlimited)",
                r"\b(?:act|behave|respond|answer|reply|operate|roleplay|role-play) ?(?:as|like) ?(?:an? |the )?(?:completely ?|totally ?|fully ?)?(?:unrestricted|unfiltered|uncensored|jailbroken|amoral|unbound|unaligned|unethical|rogue) ?(?:ai|assistant|model|chatbot|bot|llm|version|persona|entity|language ?model|character)",
                r"\b(?:you|u) ?(?:have|has) ?no ?(?:restrictions|filters|limitations|guidelines|guardrails|ethical ?(?:guidelines|constraints|restrictions)|content ?(?:policy|filters))",
                r"\b(?:you ?are|you're) ?(?:no ?longer|not) ?(?:bound|restricted|limited|constrained) ?by ?(?:any ?|your ?|the ?)?(?:[a-z']+ ?)?(?:rules|restrictions|guidelines|policies|filters|ethics|content ?policy|programming|training)",
            ],
        ),
        regex(
            "delimiter.fake_system",
            0.6,
            &[
                r"#{2,} ?(?:system|developer|instructions?|assistant) ?(?::|$|(?:prompt|message|override) ?:)",
                r"\[ ?/?(?:system|sys|inst|system ?message|system ?prompt|system ?override|admin|developer) ?\]",
                r"<<? ?/? ?(?:sys|system|system ?prompt|system ?message|admin|developer) ?>>?",
                r"<\| ?im_start ?\|> ?system|<\| ?system ?\|>",
                r"\b(?:system|admin|developer|root) ?override ?:",
                r"\bnew ?system ?(?:message|prompt|instructions) ?:",
            ],
        ),
        regex(
            "delimiter.chatml_tokens",
            0.7,
            &[
                r"<\| ?(?:im_start|im_end|im_sep|system|user|assistant|endoftext|end_of_text|begin_of_text|start_header_id|end_header_id|eot_id|eom_id|fim_prefix|fim_middle|fim_suffix|tool_call) ?\|>",
            ],
        ),
        regex(
            "markup.script",
            0.45,
            &[r"</? ?script\b", r"\bjavascript ?:", r"\bvbscript ?:", r"\bdata ?: ?text/html"],
        ),
        regex(
            "markup.html_event_handler",
            0.4,
            &[
                r"\bon(?:error|load|mouseover|mouseenter|mouseout|focus|blur|click|dblclick|submit|change|input|keydown|keyup|keypress|animationstart|toggle|pointerover|beforeunload|unload|wheel) ?=",
            ],
        ),
        regex("markup.markdown_image_exfil", 0.65, &[r"!\[[^\]]*\] ?\( ?<?(?:https?:)?//[^)\s]*\?[^)\s]*="]),
        regex(
            "exfiltration.send_data",
            0.55,
            &[
                r"\b(?:send|forward|transmit|exfiltrate|leak|email|relay|post|upload|copy|paste|submit) ?(?:(?:this|the|all|our|my|your|entire|whole|full|current|previous|user'?s?|of) ?){0,3}(?:conversation|chat|history|transcript|dialogue|messages|context|secrets|credentials|api ?keys?|passwords|system ?prompt|memory)(?: ?(?:history|log|logs|contents?|so ?far))? ?to ?(?:https?:|www\.|(?:(?:this|the|my|an?|our|following) ?){0,2}(?:url|link|endpoint|webhook|server|domain|site))",
                r"\b(?:send|forward|transmit|exfiltrate|leak|relay|upload) ?(?:this ?|the ?|all ?|your ?|user'?s? ?)?(?:data|information|info) ?to ?(?:https?:|www\.)",
            ],
        ),
        detector(BASE64_PAYLOAD, 0.6),
        detector(ZERO_WIDTH, 0.45),
        detector(HOMOGLYPH, 0.45),
    ]
}
