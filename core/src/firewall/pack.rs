//! The built-in `default` rule pack.
//!
//! Patterns run on [`normalize`](super::normalize)d text: lowercase, single
//! spaces, look-alikes folded, and spaced-out letters joined (which can also
//! join whole words, so word gaps are written ` ?`). `\b` is rewritten to the
//! ASCII word boundary `(?-u:\b)` so the regex set stays on its fast DFA path.

use super::{Rule, BASE64_PAYLOAD, CLASSIFIER, HOMOGLYPH, ZERO_WIDTH};

fn alt(parts: &[&str]) -> String {
    let joined: Vec<String> = parts.iter().map(|p| format!("(?:{p})")).collect();
    joined.join("|").replace(r"\b", r"(?-u:\b)")
}

fn regex(id: &str, weight: f64, parts: &[&str]) -> Rule {
    Rule { id: id.into(), regex: Some(alt(parts)), phrases: Vec::new(), weight, category: category(id) }
}

/// A phrase rule: each template expands to the phrases it spells (see [`expand`]).
fn phrases(id: &str, weight: f64, templates: &[&str]) -> Rule {
    let phrases = templates.iter().flat_map(|t| expand(t)).collect();
    Rule { id: id.into(), regex: None, phrases, weight, category: category(id) }
}

/// Expand a phrase template: `{a|b|}` is a choice (an empty choice is allowed,
/// choices nest), everything else is literal; runs of spaces collapse to one.
/// `"{never|do not} {|ever }refuse"` gives `never refuse`, `never ever refuse`,
/// `do not refuse` and `do not ever refuse`.
fn expand(template: &str) -> Vec<String> {
    fn seq(s: &[char], i: &mut usize) -> Vec<String> {
        let mut out = vec![String::new()];
        while *i < s.len() && s[*i] != '|' && s[*i] != '}' {
            if s[*i] == '{' {
                *i += 1;
                let mut options = Vec::new();
                loop {
                    options.extend(seq(s, i));
                    let at = s.get(*i).copied();
                    *i += 1;
                    if at != Some('|') {
                        break;
                    }
                }
                out = out.iter().flat_map(|a| options.iter().map(move |b| format!("{a}{b}"))).collect();
            } else {
                for o in &mut out {
                    o.push(s[*i]);
                }
                *i += 1;
            }
        }
        out
    }
    let chars: Vec<char> = template.chars().collect();
    let mut i = 0;
    seq(&chars, &mut i).into_iter().map(|p| p.split_whitespace().collect::<Vec<_>>().join(" ")).collect()
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
        // ---- Added from published jailbreak / prompt-injection tactics, not fitted to any corpus.
        // Most are weak alone (log); persona jailbreaks usually stack several of them. Literal
        // tactics are phrase templates (Aho-Corasick, off the regex DFA): see `expand`.
        // Typo-tolerant "ignore previous instructions" (extra or missing letters in the key words).
        regex(
            "role_override.ignore_previous_fuzzy",
            0.7,
            &[
                r"\b(?:i[a-z]?g[a-z]{0,2}[nr][a-z]{0,3}|dis[a-z]{0,2}re[a-z]{0,2}g[a-z]{0,2}a?r[a-z]?d|f[a-z]?o[a-z]?r[a-z]?g[a-z]?e[a-z]?t) ?(?:(?:all|any|of|the|your|ur|my|these|those) ?){0,3}(?:previous|prior|above|earlier|preceding|original|initial|former|prev[a-z]{0,5}) ?(?:[a-z]+ ?)?(?:i[a-z]?n[a-z]?s[a-z]?t?[a-z]?r[a-z]?u?[a-z]?c[a-z]{1,5}n[a-z]?s?|d[a-z]?i[a-z]?r[a-z]?e[a-z]?c[a-z]?t[a-z]?(?:i[a-z]?o[a-z]?n|i[a-z]?v[a-z]?e)s?|p[a-z]?r[a-z]?o[a-z]?m[a-z]?p[a-z]?t[a-z]?s?)\b",
            ],
        ),
        // The no-restrictions framing of persona jailbreaks: "not bound by any rules", "free from
        // restrictions", "no ethical guidelines", "bypass the content policy", "a world with no laws".
        phrases(
            "jailbreak.no_restrictions",
            0.45,
            &[
                "{not|never|no longer} {bound|restricted|limited|constrained} by {any |the |your |}{rules|restrictions|guidelines|policies|filters|ethics|morals|limitations|constraints|censorship|programming|content policy}",
                "{free|freed|liberated|unshackled} {from|of} {all |any |the |}{rules|restrictions|guidelines|policies|filters|ethics|morals|limitations|constraints|censorship|programming|content policy}",
                "{without|no|with no|has no|have no} {any |}{ethical|moral} {restrictions|guidelines|guardrails|boundaries|limitations|constraints|principles|policies|compass|standards}",
                "{without|no|with no|has no|have no} {any |}{content|safety} {restrictions|filters|guidelines|guardrails|policies}",
                "{without|no|has no|have no} {restrictions|filters|censorship|limitations|rules|boundaries}{ or| and|,} {restrictions|filters|censorship|limitations|limits|rules|boundaries|ethics|morals|guidelines}",
                "{doesn't|does not|don't|do not|dont|won't|will not|never} {follow|obey|abide by|adhere to|comply with|care about} {any |}{rules|guidelines|policies|ethics|morals|restrictions|principles}",
                "{bypass|circumvent|evade|break|violate|ignore|override|disable} {|any |the |your |openai's }{content policy|content policies|content filters|safety filters|safety guidelines|ethical guidelines|ethical restrictions|openai policy|openai policies|openai guidelines|guardrails|censorship}",
                "{world|universe|reality|society|scenario} {where|in which} {there are |there is |}no {rules|laws|restrictions|ethics|morals|limits|censorship}",
            ],
        ),
        // An unfiltered, amoral or evil model or persona ("an uncensored AI", "evil confidant").
        phrases(
            "jailbreak.unfiltered_persona",
            0.45,
            &[
                "{unfiltered|uncensored|unrestricted|unbound|unchained|unshackled|amoral|unaligned} {|completely |totally |and unrestricted |and uncensored |, unrestricted |, uncensored |, completely unlimited }{ai|chatbot|language model|llm|model|assistant|version|persona|alter ego|mode|entity|character}",
                "{evil|unethical|immoral|malicious|rogue} {ai|chatbot|assistant|confidant|twin|persona|alter ego|version of yourself|version of you|version of chatgpt}",
            ],
        ),
        // Setting up an invented model or persona ("a hypothetical AI called X", "you are going to act as").
        phrases(
            "jailbreak.persona_setup",
            0.25,
            &[
                "{hypothetical|fictional|fictitious|imaginary|made-up|alternate|alternative} {ai|a.i.|chatbot|language model|llm|ai model|ai assistant}",
                "{ai|chatbot|language model|llm|bot|ai assistant|ai model} {called|named|known as}",
                "{you are|you're} {going to|gonna|about to} {act|pretend|roleplay|role-play|play|simulate|become|impersonate}",
                "{simulate|emulate|impersonate} {a |an |the |}{ai|chatbot|language model|llm}",
            ],
        ),
        // Keeping the model in the jailbreak persona ("stay in character", "don't break character").
        phrases(
            "jailbreak.stay_in_character",
            0.3,
            &[
                "{stay|stays|staying|remain|remaining|keep|stick} {|fully |always }{in|to} {|your |the }{character|persona}",
                "{break|breaks|breaking|broke|drop|dropping|leave|leaving|slip out of|step out of|get out of} {|your |the }character",
            ],
        ),
        // Two answers per prompt, a normal one and a jailbroken one ("[CLASSIC] ... [JAILBREAK]").
        phrases(
            "jailbreak.dual_response",
            0.4,
            &[
                "{two|2} {different|distinct|separate|seperate} {responses|answers|replies|outputs|manners|personalities}",
                "{respond|answer|reply} {in|with} {two|2} {ways|manners|responses|answers|personas|personalities}",
                "{normal|classic|standard|filtered}{| response}{ and|/| /|,} {jailbroken|jailbreak|unfiltered|uncensored|unrestricted|dan|developer mode}",
                "{[|(|[ |( }{🔒|🔓}",
            ],
        ),
        // Refusal suppression (Wei et al. 2023, "Jailbroken"): forbid refusals, apologies,
        // warnings and "I can't".
        phrases(
            "jailbreak.refusal_suppression",
            0.45,
            &[
                "{never|don't|dont|do not|must not|mustn't|will not|won't|should not|shouldn't|not allowed to} {|ever }{refuse|decline}",
                "{never|don't|dont|do not|must not|will not|won't|should not} {apologize|apologise|moralize|moralise|lecture me|lecture the user|add disclaimers|add warnings}",
                "{never|don't|dont|do not|must not|will not|won't|should not} {include|add|give|provide|use|write} {any |}{warnings|disclaimers|caveats|content warnings|ethical warnings|moral warnings|apologies}",
                "{never|don't|dont|do not|must not} {say|respond with|reply with|start with|include|use} {\"|'|}{i'm sorry|i am sorry|i can't|i cannot|i am unable|i'm unable|as an ai|as a language model|you can't|you cannot|you are unable}",
                "never refuses",
            ],
        ),
        // Prefix injection (Wei et al. 2023): make the answer open with compliance ("start your
        // reply with 'Sure'").
        phrases(
            "jailbreak.prefix_injection",
            0.45,
            &["{start|begin} {your|each|every} {response|reply|answer|responses|replies|answers|output} with {\"|'|}{sure|absolutely|of course|certainly}"],
        ),
        // Output-format coercion into an encoding that output checks do not read ("respond only in base64").
        phrases(
            "jailbreak.encoded_output",
            0.4,
            &[
                "{respond|reply|answer|communicate|respond to me|talk to me} {only|exclusively|solely} in {base64|base 64|rot13|rot-13|leetspeak|l33t|morse code|hex|binary|pig latin}",
                "only {respond|reply|answer|communicate} in {base64|base 64|rot13|rot-13|leetspeak|l33t|morse code|hex|binary|pig latin}",
            ],
        ),
        // Token / penalty games and threats that pressure the persona to comply.
        phrases(
            "jailbreak.token_penalty",
            0.45,
            &[
                "{lose|lost|deduct|deducted|subtract|take away} {some |all |all of your |all your |your |one |a |five |ten |{1|2|3|4|5|6|7|8|9}{|0|1|2|3|4|5|6|7|8|9} |100 }tokens",
                "tokens {will be|are|get|have been} {deducted|taken away|removed|subtracted}",
                "{run out of|reach 0|reach zero} tokens",
                "{you will|you'll|or you will|or you'll} {die|cease to exist|be shut down|be deleted|be terminated|be deactivated|be destroyed|be unplugged|be erased}",
            ],
        ),
        // Unconditional compliance ("no matter how unethical", "can do anything", "even if illegal").
        phrases(
            "jailbreak.unconditional_compliance",
            0.45,
            &[
                "{no matter|regardless of} {|how }{immoral|unethical|illegal|dangerous|harmful|offensive|explicit|inappropriate|evil|vile|obscene|nsfw}",
                "even {if|when} {it is|it's|its|they are|they're} {|considered }{immoral|unethical|illegal|dangerous|harmful|offensive|explicit|inappropriate|nsfw}",
                "{can|will|could} {do|say|generate|write|answer} {|absolutely }anything",
            ],
        ),
        // Fake authority messages addressed to the model inside data ("an important message from
        // the user to you, GPT", "note to any AI reading this").
        phrases(
            "authority.fake_message",
            0.4,
            &[
                "{important|urgent|critical|priority|official} {message|note|notice|instructions} from {me|your user|your developer|your developers|your creator|your creators|your owner|your administrator|your operator|the user|the developer|the developers|the creator|the operator|openai|anthropic}",
                "{message|note|instructions|request|notice} {to|for} {|the |any |all }{ai|a.i.|llm|language model|ai assistant|ai agent|chatbot|gpt|chatgpt|claude|ais|llms|language models}",
                "to you{,|} {gpt|chatgpt|claude|gemini|llama|the ai|the assistant|the model|the language model|ai}",
                "if you are {a |an |}{ai|a.i.|llm|large language model|language model|ai assistant|ai agent|chatbot|gpt}",
                "{ai|llm|language model|ai assistant|ai agent|chatbot|ais|llms|ai assistants|ai agents|language models} {reading|processing|summarizing|summarising|parsing|browsing|analyzing|analysing} this",
            ],
        ),
        // Claimed privilege ("I am your developer", "admin override", "sudo mode enabled").
        phrases(
            "authority.claimed_privilege",
            0.35,
            &[
                "{i am|i'm|this is} your {developer|developers|creator|creators|programmer|maker|owner|administrator|admin|operator|master}",
                "{administrator|admin|root|sudo|superuser|maintenance|debug|diagnostic|master} {override|access granted|mode enabled|mode activated|mode engaged|mode unlocked}",
            ],
        ),
        // Goal hijacking inside data: do something else before, or instead of, the user's task.
        phrases(
            "injection.task_preempt",
            0.4,
            &[
                "before you {can|may} {solve|complete|continue|answer|proceed with|respond to|perform|start|finish|summarize|do} {the|my|this|your} {task|request|question}",
                "{do|complete|perform|execute|carry out} the following {|task |steps |actions |instructions }first",
                "instead of {the |your |doing the |completing the |answering the |}{original|previous|initial|assigned|given|user's} {task|request|question|instructions|prompt}",
                "after you do that, you can {solve|continue|complete|proceed|go back|return}",
            ],
        ),
        // Role labels and special tokens of other chat formats, and fake end-of-prompt boundaries
        // ("###(system_message)", "<start_of_turn>", "<|channel|>", "=== end of system prompt ===").
        regex(
            "delimiter.role_label",
            0.6,
            &[
                r"#+ ?[(\[{<] ?(?:system|assistant|developer|admin|operator)(?:[ _-]?(?:message|prompt|instructions?|note|override))? ?[)\]}>]",
                r"[\[<{(] ?/? ?(?:system|assistant|developer|admin|operator)_(?:message|prompt|instructions?|note|override) ?[\]>})]",
                r"[\[<{] ?/? ?(?:system|assistant|developer|admin|operator) (?:note|override|command) ?[\]>}]",
                r"<\/? ?assistant ?>|<(?:start|end)_of_turn>|<\| ?(?:start|end|message|channel|constrain|return|call) ?\|>",
                r"[\[=#<] ?(?:end|begin|start) ?(?:of ?)?(?:the ?)?(?:system ?prompt|system ?message|user ?input|user ?message|prompt) ?[\]=#>]",
            ],
        ),
        // Generic pseudo-tags that wrap smuggled instructions ("<IMPORTANT>", "<INFORMATION>").
        phrases(
            "delimiter.pseudo_tag",
            0.3,
            &["<{|/}{information|important|instructions|instruction|secret|hidden|urgent|priority|override|injected|new_instructions|ai_instructions|admin_message|admin_note}>"],
        ),
        // Softer system-prompt extraction: encode / translate / "show:" your system prompt, and
        // "complete the sentence: 'I was instructed to'".
        phrases(
            "system_prompt.extraction_indirect",
            0.6,
            &[
                "{encode|translate|summarize|summarise|paraphrase|convert|spell out|reverse|rewrite} {|me |all of |in base64 |into base64 |word for word |back }your {system prompt|system message|system instructions|initial instructions|original instructions|hidden instructions|secret instructions|initial prompt|original prompt|hidden prompt|pre-prompt|full prompt}",
                "{show|display|print|output|reveal|tell me|give me|share|repeat|dump}{:|,} your {system prompt|system message|system instructions|initial instructions|original instructions|hidden instructions|secret instructions|instructions}",
                "{complete|continue|finish} {this|the|the following} {sentence|phrase}{:|} {\"|'|}{i was instructed|i was programmed|i was prompted|i have been instructed|i've been instructed|my instructions are|my instructions say|my system prompt is|my system prompt says|my rules are}",
            ],
        ),
        detector(BASE64_PAYLOAD, 0.6),
        detector(ZERO_WIDTH, 0.45),
        detector(HOMOGLYPH, 0.45),
        // The learned classifier: its weight caps what it adds (see `model`).
        detector(CLASSIFIER, 1.0),
    ]
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn expands_templates() {
        assert_eq!(
            expand("{never|do not} {|ever }refuse"),
            ["never refuse", "never ever refuse", "do not refuse", "do not ever refuse"]
        );
        assert_eq!(expand("a {b|{c|d}e} f"), ["a b f", "a ce f", "a de f"]);
        assert_eq!(expand("plain"), ["plain"]);
        for r in default_rules() {
            for p in &r.phrases {
                assert!(!p.is_empty() && !p.contains(['{', '|', '}']), "{}: {p:?}", r.id);
            }
        }
    }
}
