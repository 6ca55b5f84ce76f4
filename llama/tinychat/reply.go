package tinychat

// Assistant reply templates, by emotion, person and tense. First-person replies speak of the
// assistant's own feeling ("I am thrilled that you …"); third-person ones of the character's
// ("Lena was thrilled with …") and use no first-person pronoun. Every one mentions {obj}. A reply
// of tense past answers a user message about something done, future one about a plan, any either.
// Neutral replies carry no word of the emotion lexicon.

var replyGroups = []group{
	// ---- joy ----
	{Joy, First, past, []string{
		"I am {feel} that {act} {did} {obj}!",
		"That is wonderful news about {obj}. I am so happy for {act_obj}!",
		"I love hearing that {act} {did} {obj}. It made my whole day brighter.",
		"{Obj} sound{s} like a real delight. I am smiling just thinking about it.",
		"I knew {obj} would go well, and I am {feel} that {they} did.",
	}, []string{
		"Reading about {obj} put a spring in my step. I am {feel} for {act_obj}!",
	}},
	{Joy, First, future, []string{
		"I am {feel} about {obj} {when}! It is going to be wonderful.",
		"What a lovely plan. I am so excited that {act} {act_is} going to {do} {obj}.",
		"I just know {obj} will be a joy. I am {feel} for {act_obj}!",
	}, []string{
		"I can hardly wait to hear how {obj} turn{s} out. I am already {feel} about it!",
	}},
	{Joy, First, either, []string{
		"I adore {obj}! Just hearing about {it} makes me {feel}.",
		"{Obj} always put{s} a big smile on my face. I am {feel} you brought {it} up.",
		"Oh, I love {obj}! Talking about {it} fills me with {enoun} every time.",
		"Few things make me happier than {obj}. I feel {feel} already.",
	}, []string{
		"My heart is so full of {enoun} when I think about {obj}.",
	}},
	{Joy, Third, past, []string{
		"{Who} was {feel} about {obj}. {He} could not stop smiling.",
		"{Who} came home {feel} and told everyone how wonderful {obj} {was}.",
		"{Obj} went so well that {who} laughed with delight all evening.",
		"{Who} said {obj} {was} the best part of {his} week, and {he} has been cheerful ever since.",
	}, []string{
		"{Who} loved every minute of {obj}. {He} was grinning from ear to ear.",
	}},
	{Joy, Third, future, []string{
		"{Who} is {feel} about {obj} {when}. {He} has been humming happily all day.",
		"{Who} will love {obj}, and {he} is already smiling at the thought.",
		"{Who} keeps talking about {obj} with a big smile. {He} is {feel}.",
	}, []string{
		"Just the idea of {obj} {when} has {who} beaming with {enoun}.",
	}},
	{Joy, Third, either, []string{
		"{Who} adores {obj}. {He} lights up with {enoun} whenever {they} {is} mentioned.",
		"{Obj} always make{s} {who} {feel}.",
		"Whenever {who} thinks about {obj}, {he} feels {feel}.",
	}, []string{
		"{Who} is the happiest person around whenever the talk turns to {obj}.",
	}},

	// ---- trust ----
	{Trust, First, past, []string{
		"I always knew {act} could handle {obj}. I trust {act_obj} completely.",
		"I had faith that {obj} would turn out fine, and {they} did. {Act} {act_is} so reliable.",
		"I have no doubt {act} did a fine job with {obj}. I trust {act_poss} judgement.",
		"I believed in {act_obj} the whole time. {Obj} {was} in safe hands.",
	}, []string{
		"I knew I could count on {act_obj} for {obj}, and {act} came through.",
	}},
	{Trust, First, future, []string{
		"I am {feel} that {obj} will go well. I trust {act_obj} to get it right.",
		"I know I can rely on {act_obj} for {obj} {when}.",
		"I have complete faith in {act_obj}. {Obj} will be in good hands {when}.",
	}, []string{
		"Mark my words: {obj} will go smoothly {when}, and I trust {act_obj} to lead the way.",
	}},
	{Trust, First, either, []string{
		"I trust {who} with {obj} completely. {He} is as dependable as they come.",
		"I believe in {act_obj}, and I am {feel} about {obj}.",
		"{Obj} {is} something I would trust {who} with any day.",
		"I feel {feel} that {obj} {is} in good hands with {who}.",
	}, []string{
		"I have always been able to rely on {who} when it comes to {obj}.",
	}},
	{Trust, Third, past, []string{
		"{Who} trusted the plan for {obj} from the start, and {he} was right to.",
		"{Who} knew {obj} would be fine. {He} has great faith in the people around {him}.",
		"{Who} relied on a good friend for {obj}, and that trust paid off.",
		"{Who} felt {feel} about {obj} and never doubted it for a second.",
	}, []string{
		"Everyone could count on {who} with {obj}. {He} proved to be reliable once again.",
	}},
	{Trust, Third, future, []string{
		"{Who} is {feel} that {obj} will go smoothly {when}.",
		"{Who} trusts that {obj} will work out. {He} believes in the people helping {him}.",
		"{Who} has faith in {obj} and is counting on {it} to go well {when}.",
	}, []string{
		"{Who} will rely on a friend for {obj}, and {he} feels safe doing so.",
	}},
	{Trust, Third, either, []string{
		"{Who} has total confidence in {obj}. {He} believes in {it} completely.",
		"When it comes to {obj}, {who} is someone people can always rely on.",
		"{Who} feels {feel} about {obj}. {He} is a loyal and steady person.",
	}, []string{
		"People trust {who} with {obj} because {he} is honest and dependable.",
	}},

	// ---- sadness ----
	{Sadness, First, past, []string{
		"I am so sorry to hear about {obj}. I feel {feel} about it.",
		"Oh, that makes me sad. I was hoping {obj} would go better for {act_obj}.",
		"I am {feel} about {obj}. It must have been a lonely, gloomy day.",
		"That is such a shame about {obj}. I feel like crying for {act_obj}.",
	}, []string{
		"My heart sank when I read about {obj}, and I feel a deep sorrow.",
	}},
	{Sadness, First, future, []string{
		"I am {feel} about {obj} {when}. I will miss having {who} around afterwards.",
		"I feel a heavy sadness about {obj}. It will not be the same this time.",
		"I am sad to say it, but {obj} {when} just fill{s} me with gloom.",
	}, []string{
		"Somehow {obj} {when} feel{s} like the end of something, and I am {feel}.",
	}},
	{Sadness, First, either, []string{
		"{Obj} always make{s} me {feel}. It reminds me of better days.",
		"I feel {feel} whenever {obj} {is} mentioned.",
		"Sadly, {obj} {is} a sore subject for me. I feel {feel} just thinking about {it}.",
		"I am sorry, but talking about {obj} makes my heart ache.",
	}, []string{
		"There is a sadness in me when I think of {obj}, and it will not go away.",
	}},
	{Sadness, Third, past, []string{
		"{Who} was {feel} after {obj}. {He} sat quietly by the window for hours.",
		"{Who} had tears in {his} eyes after {obj}.",
		"{Obj} did not go the way {who} hoped, and {he} felt {feel} all evening.",
		"{Who} cried a little after {obj}. {He} had hoped for so much more.",
	}, []string{
		"{Who} was heartbroken about {obj} and barely said a word at dinner.",
	}},
	{Sadness, Third, future, []string{
		"{Who} is {feel} about {obj} {when}. {He} wishes things could be different.",
		"The thought of {obj} {when} leaves {who} feeling {feel}.",
		"{Who} expects {obj} to be a letdown, and {he} is already {feel}.",
	}, []string{
		"{Who} will be sad when {obj} {is} over, and {he} knows it.",
	}},
	{Sadness, Third, either, []string{
		"{Who} feels {feel} whenever {obj} {is} mentioned.",
		"{Obj} bring{s} {who} nothing but sorrow these days.",
		"{Who} gets a lump in {his} throat at the mention of {obj}. {He} feels so sad.",
	}, []string{
		"{Who} sighs at the thought of {obj}. {He} is {feel} about {it}.",
	}},

	// ---- anger ----
	{Anger, First, past, []string{
		"I am {feel} about {obj}! That is completely unacceptable.",
		"Ugh, {obj} again? I am so angry on {act_poss} behalf.",
		"I am furious that {obj} turned out like that. Someone should answer for it.",
		"How ridiculous! I am {feel} that {act} had to put up with {obj} like that.",
	}, []string{
		"That makes my blood boil. {Obj} should never have been handled so badly, and I am {feel}.",
	}},
	{Anger, First, future, []string{
		"I am already {feel} about {obj} {when}. It is a ridiculous idea.",
		"Honestly, {obj} {when} make{s} me so angry. Nobody asked for it.",
		"I am {feel} that {act} {act_has} to {do} {obj} {when}. It is outrageous.",
	}, []string{
		"I am fed up with {obj}, and {when} will be no different. I am {feel}.",
	}},
	{Anger, First, either, []string{
		"Do not get me started on {obj}. Just hearing about {it} makes me {feel}.",
		"{Obj} {is} a sore point with me. I get {feel} every time.",
		"I have had enough of {obj}. It is infuriating.",
	}, []string{
		"Frankly, {obj} make{s} me see red. I am {feel}.",
	}},
	{Anger, Third, past, []string{
		"{Who} was {feel} about {obj}. {He} slammed the door on the way out.",
		"{Obj} left {who} fuming for the rest of the day.",
		"{Who} stormed off after {obj}, angry at how badly it went.",
		"{Who} complained loudly about {obj}. {He} was absolutely livid.",
	}, []string{
		"After {obj}, {who} was so irritated that {he} could barely speak.",
	}},
	{Anger, Third, future, []string{
		"{Who} is already {feel} about {obj} {when}. {He} thinks it is a waste of time.",
		"{Who} will be furious if {obj} turn{s} out badly again {when}.",
		"{Who} resents {obj} and will be {feel} about it {when}.",
	}, []string{
		"{Who} has been grumbling about {obj} all week, and {he} will be {feel} {when}.",
	}},
	{Anger, Third, either, []string{
		"{Who} gets {feel} whenever {obj} {is} mentioned.",
		"{Obj} {is} the one thing that makes {who} truly angry.",
		"{Who} cannot stand {obj}. It makes {him} {feel}.",
	}, []string{
		"{Who} has no patience for {obj}; {he} finds {it} infuriating.",
	}},

	// ---- fear ----
	{Fear, First, past, []string{
		"I was {feel} when I heard about {obj}. Is everyone all right?",
		"Oh dear, {obj} sound{s} frightening. My hands are shaking just reading about it.",
		"That gives me chills. I am {feel} about what happened with {obj}.",
		"I am scared that {obj} {was} more dangerous than {they} looked.",
	}, []string{
		"Hearing about {obj} made my heart race with {enoun}.",
	}},
	{Fear, First, future, []string{
		"I am {feel} about {obj} {when}. What if something goes wrong?",
		"I have a bad feeling about {obj}. I am afraid it could go badly {when}.",
		"The thought of {obj} {when} fills me with {enoun}.",
	}, []string{
		"Please be careful with {obj} {when}. I am so nervous for {act_obj}.",
	}},
	{Fear, First, either, []string{
		"To be honest, I am afraid of {obj}. I get {feel} just thinking about {it}.",
		"Just hearing about {obj} makes me nervous. I can feel the panic rising.",
		"I dread anything to do with {obj}. It scares me more than I can say.",
	}, []string{
		"{Obj} give{s} me the shivers. I am {feel} about {it}.",
	}},
	{Fear, Third, past, []string{
		"{Who} was {feel} about {obj}. {He} could not stop trembling.",
		"{Who} went pale when {he} heard about {obj}. {He} was {feel}.",
		"{Obj} gave {who} a terrible fright, and {he} is still shaken.",
		"After {obj}, {who} was so nervous that {he} could not sleep.",
	}, []string{
		"{Who} was scared stiff about {obj}, and {his} heart was pounding.",
	}},
	{Fear, Third, future, []string{
		"{Who} is {feel} about {obj} {when}. {He} keeps imagining the worst.",
		"{Who} dreads {obj} {when} and has been pacing the room all day.",
		"{Who} is afraid that {obj} will go wrong {when}.",
	}, []string{
		"{Who} lies awake at night, gripped by {enoun} about {obj} {when}.",
	}},
	{Fear, Third, either, []string{
		"{Who} gets {feel} whenever {obj} {is} mentioned.",
		"{Who} is terrified of {obj}. {He} avoids {it} whenever {he} can.",
		"Even a mention of {obj} makes {who} {feel}.",
	}, []string{
		"{Who} has always been afraid of {obj}; {he} finds {it} unsettling.",
	}},

	// ---- neutral ----
	{Neutral, First, past, []string{
		"Thanks for telling me about {obj}. How long did {they} take?",
		"I see. So {act} {did} {obj}. What did {who} think of {it}?",
		"Okay, noted. I think {obj} usually take{s} about an hour.",
		"That is useful to know about {obj}. I would like to hear more details.",
	}, []string{
		"I understand. {Obj} can be a lot of work, so I would plan the next one early.",
	}},
	{Neutral, First, future, []string{
		"That sounds like a plan. I would check the details of {obj} the day before.",
		"Okay. For {obj}, I suggest starting early and bringing water.",
		"I think {obj} {when} {is} doable. Let me know if you need a checklist.",
	}, []string{
		"Here is my advice: talk to {who} first, then {do} {obj} at a quiet time.",
	}},
	{Neutral, First, either, []string{
		"I know a little about {obj}. Most people {do} {it} in the afternoon.",
		"In my experience, {obj} take{s} some planning but {is} not difficult.",
		"I can help with {obj}. What would you like to know first?",
		"Good question about {obj}. I would compare a few options before deciding.",
	}, []string{
		"I have read that {obj} work{s} best with a simple plan and enough time.",
	}},
	{Neutral, Third, past, []string{
		"{Who} mentioned {obj} too. {He} said it went about as expected.",
		"So {who} was there for {obj}. {He} usually takes notes on these things.",
		"{Who} told the others about {obj} afterwards, mostly the practical details.",
		"{Obj} took {who} most of the afternoon, according to {his} notes.",
	}, []string{
		"{Who} wrote a short summary of {obj} for the group chat.",
	}},
	{Neutral, Third, future, []string{
		"{Who} has a checklist for {obj} {when}. {He} plans to start early.",
		"{Who} will need a few things for {obj}, so {he} is making a list.",
		"{Who} checked the schedule for {obj} and marked the date.",
	}, []string{
		"{Who} says {obj} {when} should take about two hours.",
	}},
	{Neutral, Third, either, []string{
		"{Who} {does} {obj} fairly often and keeps it simple.",
		"{Who} knows a lot about {obj} and usually gives practical advice.",
		"{Obj} {is} something {who} reads about in {his} spare time.",
		"{Who} has a routine for {obj}: plan ahead, keep it short, and tidy up afterwards.",
	}, []string{
		"According to {who}, {obj} {is} mostly a matter of timing.",
	}},
}

// openers may start a reply. They name no one, so they suit both persons.
var openers = map[Emotion][]string{
	Joy:     {"What great news!", "How wonderful!", "Wow!", "Hooray!", "Oh, how lovely!", "Yay!", "Fantastic!"},
	Trust:   {"Of course.", "Absolutely.", "No doubt about it.", "Rest easy.", "Good call."},
	Sadness: {"Oh no.", "What a shame.", "That is a pity.", "Oh, how sad.", "Sigh."},
	Anger:   {"Ugh.", "Unbelievable!", "Seriously?", "How ridiculous!", "Oh, come on!"},
	Fear:    {"Oh dear.", "Yikes.", "Goodness.", "Gosh.", "Eek."},
	Neutral: {"Okay.", "Right.", "Got it.", "Noted.", "Alright."},
}

// closers may end a reply; they fit either tense.
var closers = map[Emotion]map[Person][]string{
	Joy: {
		First: {"I am so happy for everyone involved.", "This made my day!", "What a joy to hear."},
		Third: {"{He} is still beaming.", "It was a joy to see {him} so cheerful."},
	},
	Trust: {
		First: {"I trust it will all work out.", "You can rely on that."},
		Third: {"{He} trusts it will all work out.", "{His} faith never wavers."},
	},
	Sadness: {
		First: {"I feel sad for everyone involved.", "I really am sorry."},
		Third: {"{He} still feels a bit glum.", "It is a sad story, really."},
	},
	Anger: {
		First: {"It really makes me angry.", "I am still fuming."},
		Third: {"{He} is still fuming.", "{His} anger has not cooled yet."},
	},
	Fear: {
		First: {"I am honestly a little scared.", "It makes me nervous."},
		Third: {"{He} is still shaking.", "{His} fear has not gone away."},
	},
	Neutral: {
		First: {"Let me know how it goes.", "I can share more tips if needed."},
		Third: {"{He} may share more details later.", "{Who} keeps a record of these things."},
	},
}
