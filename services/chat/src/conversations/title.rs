//! Conversation titles, made from the first exchange without calling a model: the user's first message,
//! on one line, cut at a word boundary. Deterministic, free and instant.

const MAX_TITLE_CHARS: usize = 60;

pub fn title_from(first_message: &str, first_answer: &str) -> String {
    let source = if first_message.trim().is_empty() { first_answer } else { first_message };
    let line = source.split_whitespace().collect::<Vec<_>>().join(" ");
    let line = line.trim_matches(|c: char| c.is_ascii_punctuation() && c != '?' && c != '(' && c != ')');
    if line.is_empty() {
        return "New conversation".to_string();
    }
    if line.chars().count() <= MAX_TITLE_CHARS {
        return line.to_string();
    }
    let cut: String = line.chars().take(MAX_TITLE_CHARS).collect();
    let at_word = match cut.rfind(' ') {
        Some(space) if space > MAX_TITLE_CHARS / 2 => &cut[..space],
        _ => cut.as_str(),
    };
    format!("{}…", at_word.trim_end_matches(|c: char| c.is_ascii_punctuation() || c == ' '))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_questions_become_the_title_on_one_line() {
        assert_eq!(title_from("  How do   I bake\nbread? ", "Like this"), "How do I bake bread?");
        assert_eq!(title_from("Hello!", ""), "Hello");
    }

    #[test]
    fn long_messages_are_cut_at_a_word() {
        let message = "Please explain the difference between a process and a thread in modern operating systems";
        assert_eq!(title_from(message, ""), "Please explain the difference between a process and a…");
        let one_word = "x".repeat(100);
        assert_eq!(title_from(&one_word, "").chars().count(), MAX_TITLE_CHARS + 1);
    }

    #[test]
    fn empty_messages_fall_back_to_the_answer_or_a_default() {
        assert_eq!(title_from("   ", "Paris is the capital."), "Paris is the capital");
        assert_eq!(title_from("", "..."), "New conversation");
    }
}
