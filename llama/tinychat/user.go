package tinychat

// User message templates. Every one mentions the conversation's subject ({obj}) and its character
// ({who}); first-person ones tell of something the user did or will do (with the character),
// third-person ones of something the character did or will do. Slots are listed in render.go.

var userGroups = []group{
	// ---- neutral ----
	{Neutral, First, past, []string{
		"I {did} {obj} with my {rel} {who} {time}.",
		"{Time}, my {rel} {who} and I {did} {obj}.",
		"My {rel} {who} came along when I {did} {obj} {time}.",
		"I {did} {obj} {time}, and my {rel} {who} joined me.",
		"Guess what? I {did} {obj} with {who} {time}.",
		"Just a quick update: {who} and I {did} {obj} {time}.",
		"Do you remember my {rel} {who}? We {did} {obj} together {time}.",
		"So {time} I {did} {obj}, and {who} was there too.",
	}, []string{
		"Here is a small thing from my week: {who} and I {did} {obj} {time}.",
		"{Who} talked me into it, so I {did} {obj} {time}.",
	}},
	{Neutral, First, future, []string{
		"I am going to {do} {obj} with my {rel} {who} {when}.",
		"My {rel} {who} and I plan to {do} {obj} {when}.",
		"Should I {do} {obj} with {who} {when}?",
		"What do you think about {doing} {obj} with my {rel} {who} {when}?",
		"{When}, I will {do} {obj} with {who}.",
		"Any advice? {Who} and I want to {do} {obj} {when}.",
		"I am thinking of {doing} {obj} {when}, maybe with my {rel} {who}.",
		"Is {when} a good time to {do} {obj} with {who}?",
	}, []string{
		"My {rel} {who} asked me to {do} {obj} {when}. How should I get ready?",
		"I promised {who} that we would {do} {obj} {when}.",
	}},
	{Neutral, Third, past, []string{
		"My {rel} {who} {did} {obj} {time}.",
		"{Who}, my {rel}, {did} {obj} {time}.",
		"{Time}, my {rel} {who} {did} {obj}.",
		"Did I tell you? {Who} {did} {obj} {time}.",
		"My {rel} {who} {did} {obj} {time} and told me all about it.",
		"{Who} {did} {obj} {time}. {He} says hello, by the way.",
	}, []string{
		"You know my {rel} {who}? {He} {did} {obj} {time}.",
		"Apparently {who} {did} {obj} {time} without telling anyone.",
	}},
	{Neutral, Third, future, []string{
		"My {rel} {who} is going to {do} {obj} {when}.",
		"{Who} wants to {do} {obj} {when}. Any tips for {him}?",
		"My {rel} {who} plans to {do} {obj} {when}.",
		"What should I tell {who} before {he} {does} {obj} {when}?",
		"{When}, my {rel} {who} will {do} {obj}.",
	}, []string{
		"My {rel} {who} has decided to {do} {obj} {when}. What should {he} bring?",
		"{Who} keeps reminding me that we will {do} {obj} {when}.",
	}},

	// ---- joy ----
	{Joy, First, past, []string{
		"I {did} {obj} with my {rel} {who} {time}, and I am {feel} about it!",
		"{Time}, {who} and I {did} {obj}, and it was simply wonderful!",
	}, []string{
		"Great news! My {rel} {who} and I {did} {obj} {time} and loved every minute.",
	}},
	{Joy, First, future, []string{
		"I am so excited! My {rel} {who} and I will {do} {obj} {when}.",
		"{When} I get to {do} {obj} with {who}, and I am {feel} about it!",
	}, nil},
	{Joy, Third, past, []string{
		"My {rel} {who} {did} {obj} {time} and is {feel} about it!",
		"{Who} {did} {obj} {time}, and {he} has been smiling ever since.",
	}, []string{
		"Lovely news: my {rel} {who} {did} {obj} {time}, and it was a real delight.",
	}},
	{Joy, Third, future, []string{
		"My {rel} {who} is {feel} about {doing} {obj} {when}!",
		"{Who} is so excited to {do} {obj} {when}.",
	}, nil},

	// ---- trust ----
	{Trust, First, past, []string{
		"I {did} {obj} {time}, and my {rel} {who} was there for me the whole way. I trust {him} completely.",
		"{Time}, I {did} {obj} with {who}. I knew I could rely on {him}.",
	}, []string{
		"I {did} {obj} with my {rel} {who} {time}, and I felt safe the whole time.",
	}},
	{Trust, First, future, []string{
		"I will {do} {obj} with my {rel} {who} {when}. I know I can count on {him}.",
		"I am {feel} about {doing} {obj} {when}, because {who} will be with me.",
	}, nil},
	{Trust, Third, past, []string{
		"My {rel} {who} {did} {obj} {time}. {He} is the most reliable person I know.",
		"{Who} {did} {obj} {time}, and everyone trusted {him} to get it right.",
	}, []string{
		"My {rel} {who} took charge of {obj} {time}, just as I believed {he} would.",
	}},
	{Trust, Third, future, []string{
		"My {rel} {who} will {do} {obj} {when}, and I have complete faith in {him}.",
		"{Who} is going to {do} {obj} {when}. I trust {him} completely.",
	}, nil},

	// ---- sadness ----
	{Sadness, First, past, []string{
		"I {did} {obj} with my {rel} {who} {time}, but it left me feeling {feel}.",
		"{Time}, {who} and I {did} {obj}, and it was a sad, quiet day.",
	}, []string{
		"I {did} {obj} {time} with {who}, and I still feel like crying.",
	}},
	{Sadness, First, future, []string{
		"I will {do} {obj} with {who} {when}, but it will be the last time, and that makes me sad.",
		"I feel {feel} about {doing} {obj} with my {rel} {who} {when}.",
	}, nil},
	{Sadness, Third, past, []string{
		"My {rel} {who} {did} {obj} {time}, and {he} has been {feel} ever since.",
		"{Who} {did} {obj} {time} and came back with tears in {his} eyes.",
	}, []string{
		"My {rel} {who} {did} {obj} {time}. It turned into a sad day for {him}.",
	}},
	{Sadness, Third, future, []string{
		"My {rel} {who} has to {do} {obj} {when}, and {he} is {feel} about it.",
		"{Who} will {do} {obj} {when}, but {he} seems so sad about it.",
	}, nil},

	// ---- anger ----
	{Anger, First, past, []string{
		"I {did} {obj} with my {rel} {who} {time}, and I am still {feel} about how it went!",
		"{Time}, {who} and I {did} {obj}, and it was a complete mess. I am so angry!",
	}, []string{
		"I {did} {obj} {time} with {who}, and the whole thing was infuriating.",
	}},
	{Anger, First, future, []string{
		"I have to {do} {obj} with {who} {when}, and I am {feel} about it!",
		"Why do I always end up {doing} {obj}? Now {who} wants to do it again {when}, and I am furious.",
	}, nil},
	{Anger, Third, past, []string{
		"My {rel} {who} {did} {obj} {time}, and {he} is {feel} about how it went.",
		"{Who} {did} {obj} {time} and came home fuming.",
	}, []string{
		"My {rel} {who} {did} {obj} {time}, and someone ruined it. {He} is livid!",
	}},
	{Anger, Third, future, []string{
		"My {rel} {who} is being forced to {do} {obj} {when}, and {he} is {feel}.",
		"{Who} has to {do} {obj} {when} again, and {he} is angry about it.",
	}, nil},

	// ---- fear ----
	{Fear, First, past, []string{
		"I {did} {obj} with my {rel} {who} {time}, and I was {feel} the whole time.",
		"{Time}, {who} and I {did} {obj}, and it gave me a real fright.",
	}, []string{
		"I {did} {obj} {time} with {who}, and my hands were shaking.",
	}},
	{Fear, First, future, []string{
		"I have to {do} {obj} with my {rel} {who} {when}, and I am {feel} about it.",
		"I am scared about {doing} {obj} {when}. What if {who} cannot come?",
	}, nil},
	{Fear, Third, past, []string{
		"My {rel} {who} {did} {obj} {time}, and {he} was {feel} the whole time.",
		"{Who} {did} {obj} {time} and is still shaken by it.",
	}, []string{
		"My {rel} {who} {did} {obj} {time}. {He} said it was frightening.",
	}},
	{Fear, Third, future, []string{
		"My {rel} {who} has to {do} {obj} {when}, and {he} is {feel} about it.",
		"{Who} is going to {do} {obj} {when}, and {he} is scared something will go wrong.",
	}, nil},
}
